"""The ``train-xgb`` stage's interface, declared once: the CLI, the KFP container component
(``component.py``), the pipeline defaults and the README table come from ``SPEC``.

The hyperparameter defaults are ``XgbParams``' own (``components/train_xgb/logic.py``).
"""

from components.contracts.schemas import FRAUD_TYPES
from components.contracts.spec import Param, StageSpec
from components.contracts.training import training_io
from components.train_xgb.logic import XgbParams as _D

SPEC = StageSpec(
    module="train_xgb",
    summary="Train the supervised XGBoost fraud classifier (known fraud patterns).",
    **training_io(
        "xgb.ubj (production booster), novelty_xgb.ubj (same parameters, novel_fraud_type "
        "rows dropped) and meta.json"
    ),
    params=(
        Param("n_estimators", int, _D.n_estimators, "Maximum number of boosting rounds."),
        Param("max_depth", int, _D.max_depth, "Maximum tree depth."),
        Param("learning_rate", float, _D.learning_rate, "Shrinkage per boosting round (eta)."),
        Param("subsample", float, _D.subsample, "Row subsample ratio per tree."),
        Param("colsample_bytree", float, _D.colsample_bytree, "Feature subsample ratio per tree."),
        Param(
            "min_child_weight",
            float,
            _D.min_child_weight,
            "Minimum sum of instance weight in a child.",
        ),
        Param(
            "early_stopping_rounds",
            int,
            _D.early_stopping_rounds,
            "Stop when validation PR-AUC has not improved for this many rounds (0 = never).",
        ),
        Param(
            "novel_fraud_type",
            str,
            "scan_avoidance",
            "Fraud type withheld from the novelty booster, to measure how the blend catches "
            "a pattern it was never trained on ('none' = no novelty booster).",
            choices=FRAUD_TYPES,
        ),
        Param("seed", int, _D.seed, "Random seed."),
        Param(
            "scale_pos_weight",
            float,
            None,
            "Weight of fraud rows; unset: negatives / positives of the training rows.",
            kfp=False,
        ),
        Param("nthread", int, 0, "XGBoost threads; 0 = every CPU available.", kfp=False),
    ),
    executor_input=True,
)
