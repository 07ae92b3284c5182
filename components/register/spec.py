"""``register``'s inputs, outputs and quality-gate parameters (``components.contracts.spec``)."""

from components.contracts.spec import Io, Param, StageSpec

SPEC = StageSpec(
    module="register",
    summary="Build the serving bundle, register it in MLflow and gate the ``champion`` alias.",
    inputs=(
        Io("xgb_model", "Model", "Model folder from ``train-xgb`` (xgb.ubj)."),
        Io("iforest_model", "Model", "Model folder from ``train-iforest`` (forest.npz)."),
        Io(
            "evaluation",
            "Artifact",
            "Evaluation folder from ``evaluate`` (blend, thresholds, metrics).",
        ),
        Io("profiles", "Dataset", "Cashier profile table (Parquet) from ``features``."),
        Io(
            "features",
            "Dataset",
            "Feature table from ``features``: its test rows are scored by the champion too, "
            "so the gate compares both models on the same period.",
        ),
    ),
    outputs=(
        Io("bundle", "Model", "Serving bundle folder (manifest with sha256 of every file)."),
        Io(
            "decision",
            "Artifact",
            "JSON: registered model version, gate results and whether the ``champion`` "
            "alias moved.",
        ),
    ),
    params=(
        Param(
            "min_pr_auc",
            float,
            0.15,
            "Gate: minimum blend test PR-AUC for the new model to become champion (chance is "
            "the fraud rate, ~0.01; the default 200k-row run measures ~0.27).",
        ),
        Param(
            "min_recall_at_1pct_fpr",
            float,
            0.15,
            "Gate: minimum blend test recall at the valid-fixed 1% false-positive-rate "
            "threshold (chance is 0.01; the default 200k-row run measures ~0.29 [0.22, 0.39]).",
        ),
        Param(
            "max_regression",
            float,
            0.02,
            "Gate: largest recall drop at 1% FPR tolerated beyond the noise (the champion "
            "scored on the same test rows: reject when the 95% interval of the difference "
            "is entirely below -max_regression); fallback without a scorable champion: for "
            "PR-AUC and recall, the champion's recorded value minus this.",
        ),
        Param(
            "fail_on_reject",
            bool,
            False,
            "Fail the task (exit 1) when the gate rejects the model; default: exit 0, see "
            "the decision.",
        ),
    ),
)
