"""``evaluate``'s inputs, outputs, blend targets and headline metrics (``components.contracts.spec``)."""

from components.contracts.spec import Io, Param, StageSpec

SPEC = StageSpec(
    module="evaluate",
    summary="Blend both models into one calibrated 0-100 risk score and evaluate it.",
    inputs=(
        Io(
            "features",
            "Dataset",
            "Feature table from ``features`` (valid fits the blend and every threshold; test is "
            "only counted).",
        ),
        Io(
            "xgb_model",
            "Model",
            "Model folder from ``train-xgb`` (production and leave-one-type-out boosters).",
        ),
        Io("iforest_model", "Model", "Model folder from ``train-iforest``."),
    ),
    outputs=(
        Io(
            "evaluation",
            "Artifact",
            "Folder: blend.json (weights, calibration, thresholds, reference score "
            "histogram), metrics.json, plots/*.png, report.md.",
        ),
        Io("metrics", "Metrics", "Test metrics with 95% intervals (KFP Metrics).", required=False),
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
    ),
    executor_input=True,
    headline=(
        "unseen_cashiers_recall_at_1pct_fpr",
        "unseen_cashiers_recall_at_1pct_fpr_ci_low",
        "unseen_cashiers_recall_at_1pct_fpr_ci_high",
        "new_hire_false_alarm_ratio",
        "new_hire_false_alarm_ratio_ci_low",
        "new_hire_false_alarm_ratio_ci_high",
        "loto_recall_mean",
        "loto_recall_min",
        "loto_iforest_recall_mean",
        "loto_iforest_recall_min",
        "seen_cashiers_false_alarm_rate_at_1pct_fpr",
        "seen_cashiers_false_alarm_rate_at_1pct_fpr_ci_low",
        "seen_cashiers_false_alarm_rate_at_1pct_fpr_ci_high",
        "unseen_cashiers_false_alarm_rate_at_1pct_fpr",
        "unseen_cashiers_false_alarm_rate_at_1pct_fpr_ci_low",
        "unseen_cashiers_false_alarm_rate_at_1pct_fpr_ci_high",
        "blend_recall_at_1pct_fpr",
        "blend_recall_at_1pct_fpr_ci_low",
        "blend_recall_at_1pct_fpr_ci_high",
        "blend_pr_auc",
        "seed_view_blend_recall_at_1pct_fpr",
        "seed_view_blend_recall_at_1pct_fpr_ci_low",
        "seed_view_blend_recall_at_1pct_fpr_ci_high",
        "seed_view_blend_false_alarm_rate_at_1pct_fpr",
        "seed_view_blend_pr_auc",
        "seed_view_recall_gap",
        "seed_view_recall_gap_ci_low",
        "seed_view_recall_gap_ci_high",
        "test_rows",
    ),
)
