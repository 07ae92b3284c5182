"""``train-xgb``'s parameters, input and outputs (``components.contracts.spec``): the
hyperparameters' names, types and defaults are ``XgbParams``' own (``logic.py``)."""

from components.contracts.spec import Param, StageSpec, params_from
from components.contracts.training import training_io
from components.train_xgb.logic import AugmentParams, FoldParams, XgbParams

SPEC = StageSpec(
    module="train_xgb",
    summary="Train the supervised XGBoost fraud classifier (known fraud patterns).",
    **training_io(
        "xgb.ubj (production booster), loto/<fraud_type>.ubj (one fold booster per fraud "
        "type, trained without that type's rows) and meta.json"
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
        *params_from(
            FoldParams,
            {
                "loto_rounds": "Leave-one-type-out folds: maximum rounds of each fold booster "
                "(one per fraud type, trained without that type's rows; 0 = no folds).",
                "loto_learning_rate": "Shrinkage of the fold boosters.",
                "loto_legit_fraction": "Share of legitimate train rows the fold boosters fit "
                "on (seeded; all fraud rows kept).",
            },
        ),
        *params_from(
            AugmentParams,
            {
                "mask_share": "Share of train rows added again with optional inputs missing "
                "(seeded), so the booster learns what a field's absence means.",
                "seed_contract_share": "Of those copies, the share keeping only the seed "
                "brief's seven fields; the others miss each optional field with probability 1/2.",
                "evidence_copies": "Extrapolation prior: copies of each void / no-sale abuse "
                "train row with its count beyond any legitimate row's, so blatant abuse the "
                "data never shows scores as abuse, not as the honest region next to it (0: off).",
                "evidence_max_factor": "The copies' counts go up to this multiple of the "
                "largest legitimate count.",
            },
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
