"""KFP v2 container component for the ``evaluate`` stage (``python -m components.evaluate``)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def build(image: str):
    """Return the ``evaluate`` container component that runs in ``image``.

    Args:
        image: Full image reference, e.g. ``ghcr.io/cashier-integrity/evaluate:latest``.
    """

    @dsl.container_component
    def evaluate(
        features: Input[Dataset],
        xgb_model: Input[Model],
        iforest_model: Input[Model],
        evaluation: Output[Artifact],
        metrics: Output[Metrics],
        classification_metrics: Output[ClassificationMetrics],
        report: Output[HTML],
        high_precision_target: float = 0.8,
        medium_recall_target: float = 0.95,
    ):
        """Blend both models into one calibrated 0-100 risk score and evaluate it.

        Args:
            features: Feature table from ``features`` (its ``test`` subset is scored).
            xgb_model: Model folder from ``train-xgb``.
            iforest_model: Model folder from ``train-iforest``.
            high_precision_target: Precision the "High Risk" threshold must reach.
            medium_recall_target: Recall the "Medium Risk" threshold must reach.

        Returns:
            evaluation: Output folder: ``blend.json`` (weights, calibration, thresholds,
                reference score histogram), ``metrics.json``, ``plots/*.png``, ``report.md``.
            metrics: Output headline test metrics (KFP Metrics).
            classification_metrics: Output confusion matrix and ROC curve (KFP
                ClassificationMetrics).
            report: Output evaluation report (HTML, rendered in the KFP UI).
        """
        return dsl.ContainerSpec(
            image=image,
            command=["python", "-m", "components.evaluate"],
            args=[
                "--in-features", features.path,
                "--in-xgb-model", xgb_model.path,
                "--in-iforest-model", iforest_model.path,
                "--out-evaluation", evaluation.path,
                "--out-metrics", metrics.path,
                "--out-classification-metrics", classification_metrics.path,
                "--out-report", report.path,
                "--high-precision-target", high_precision_target,
                "--medium-recall-target", medium_recall_target,
                "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
            ],
        )  # fmt: skip

    return evaluate
