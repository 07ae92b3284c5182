"""KFP v2 container component for the ``train-xgb`` stage (``python -m components.train_xgb``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


def build(image: str):
    """Return the ``train-xgb`` container component that runs in ``image``.

    Args:
        image: Full image reference, e.g. ``ghcr.io/cashier-integrity/train-xgb:latest``.
    """

    @dsl.container_component
    def train_xgb(
        features: Input[Dataset],
        model: Output[Model],
        metrics: Output[Metrics],
        n_estimators: int = 400,
        max_depth: int = 6,
        learning_rate: float = 0.08,
        subsample: float = 0.9,
        colsample_bytree: float = 0.8,
        min_child_weight: float = 1.0,
        early_stopping_rounds: int = 30,
        novel_fraud_type: str = "scan_avoidance",
        seed: int = 42,
    ):
        """Train the supervised XGBoost fraud classifier (known fraud patterns).

        Args:
            features: Feature table from ``features``.
            n_estimators: Maximum number of boosting rounds.
            max_depth: Maximum tree depth.
            learning_rate: Shrinkage per boosting round.
            subsample: Row subsample ratio per tree.
            colsample_bytree: Feature subsample ratio per tree.
            min_child_weight: Minimum sum of instance weight in a child.
            early_stopping_rounds: Stop when validation PR-AUC has not improved for this many rounds.
            novel_fraud_type: Fraud type withheld from the novelty booster, to measure how
                the blend catches a pattern it was never trained on.
            seed: Random seed.

        Returns:
            model: Output model folder: ``xgb.ubj`` (production booster), ``novelty_xgb.ubj``
                (same parameters, ``novel_fraud_type`` rows dropped) and ``meta.json``.
            metrics: Output validation metrics (KFP Metrics, shown in the run's UI).
        """
        return dsl.ContainerSpec(
            image=image,
            command=["python", "-m", "components.train_xgb"],
            args=[
                "--in-features", features.path,
                "--out-model", model.path,
                "--out-metrics", metrics.path,
                "--n-estimators", n_estimators,
                "--max-depth", max_depth,
                "--learning-rate", learning_rate,
                "--subsample", subsample,
                "--colsample-bytree", colsample_bytree,
                "--min-child-weight", min_child_weight,
                "--early-stopping-rounds", early_stopping_rounds,
                "--novel-fraud-type", novel_fraud_type,
                "--seed", seed,
                "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
            ],
        )  # fmt: skip

    return train_xgb
