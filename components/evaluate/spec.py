"""``evaluate``'s inputs, outputs, blend targets and headline metrics (``components.contracts.spec``)."""

from components.contracts.spec import Io, Param, StageSpec

SPEC = StageSpec(
    module="evaluate",
    summary="Blend both models into one calibrated 0-100 risk score and evaluate it.",
    inputs=(
        Io(
            "features",
            "Dataset",
            "Feature table from ``features`` (valid fits the blend, test is reported).",
        ),
        Io("xgb_model", "Model", "Model folder from ``train-xgb``."),
        Io("iforest_model", "Model", "Model folder from ``train-iforest``."),
    ),
    outputs=(
        Io(
            "evaluation",
            "Artifact",
            "Folder: blend.json (weights, calibration, thresholds, reference score "
            "histogram), metrics.json, plots/*.png, report.md.",
        ),
        Io("metrics", "Metrics", "Headline test metrics (KFP Metrics).", required=False),
        Io(
            "classification_metrics",
            "ClassificationMetrics",
            "Confusion matrix (Medium-or-High vs truth) and ROC curve (KFP ClassificationMetrics).",
            required=False,
        ),
        Io(
            "report",
            "HTML",
            "Evaluation report (self-contained HTML, rendered in the KFP UI).",
            required=False,
        ),
    ),
    params=(
        Param(
            "high_precision_target",
            float,
            0.8,
            "High Risk = lowest score whose precision on valid reaches this.",
        ),
        Param(
            "medium_recall_target",
            float,
            0.95,
            "Medium Risk = highest score at which recall on valid reaches this.",
        ),
        Param(
            "novel_fraud_type",
            str,
            None,
            "Fraud type withheld from novelty_xgb.ubj; unset: from the xgb meta.json.",
            kfp=False,
        ),
    ),
    executor_input=True,
    headline=(
        "blend_pr_auc",
        "blend_roc_auc",
        "blend_recall_at_1pct_fpr",
        "novel_production_blend_recall_at_1pct_fpr",
        "xgb_pr_auc",
        "iforest_pr_auc",
        "threshold_high",
        "threshold_medium",
        "test_rows",
    ),
)
