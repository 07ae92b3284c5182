"""``train-xgb``'s parameters, input and outputs (``components.contracts.spec``): the
hyperparameters' names, types and defaults are ``XgbParams``' own (``logic.py``)."""

from components.contracts.schemas import FRAUD_TYPES
from components.contracts.spec import Param, StageSpec, params_from
from components.contracts.training import training_io
from components.train_xgb.logic import XgbParams

SPEC = StageSpec(
    module="train_xgb",
    summary="Train the supervised XGBoost fraud classifier (known fraud patterns).",
    **training_io(
        "xgb.ubj (production booster), novelty_xgb.ubj (same parameters, novel_fraud_type "
        "rows dropped) and meta.json"
    ),
    params=(
        *params_from(
            XgbParams,
            {
                "n_estimators": "Maximum number of boosting rounds.",
                "max_depth": "Maximum tree depth.",
                "learning_rate": "Shrinkage per boosting round (eta).",
                "subsample": "Row subsample ratio per tree.",
                "colsample_bytree": "Feature subsample ratio per tree.",
                "min_child_weight": "Minimum sum of instance weight in a child.",
                "early_stopping_rounds": "Stop when validation PR-AUC has not improved for "
                "this many rounds (0 = never).",
            },
        ),
        Param(
            "novel_fraud_type",
            str,
            "scan_avoidance",
            "Fraud type withheld from the novelty booster, to measure how the blend catches "
            "a pattern it was never trained on ('none' = no novelty booster).",
            choices=FRAUD_TYPES,
        ),
        *params_from(XgbParams, {"seed": "Random seed."}),
        *params_from(
            XgbParams,
            {
                "scale_pos_weight": "Weight of fraud rows; unset: negatives / positives of the "
                "training rows."
            },
            kfp=False,
        ),
        Param("nthread", int, 0, "XGBoost threads; 0 = every CPU available.", kfp=False),
    ),
    executor_input=True,
)
