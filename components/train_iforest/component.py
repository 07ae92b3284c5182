"""KFP v2 container component for ``train-iforest`` (``python -m components.train_iforest``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


def build(image: str):
    """Return the ``train-iforest`` container component that runs in ``image``.

    Args:
        image: Full image reference, e.g. ``ghcr.io/cashier-integrity/train-iforest:latest``.
    """

    @dsl.container_component
    def train_iforest(
        features: Input[Dataset],
        model: Output[Model],
        metrics: Output[Metrics],
        n_estimators: int = 200,
        max_samples: int = 512,
        seed: int = 42,
    ):
        """Train the unsupervised isolation forest (novel, unlabelled patterns).

        Args:
            features: Feature table from ``features``.
            n_estimators: Number of isolation trees.
            max_samples: Rows sampled to grow each tree.
            seed: Random seed.

        Returns:
            model: Output model folder: ``forest.npz`` (plain arrays, no pickle),
                ``iforest.skops`` and ``meta.json``.
            metrics: Output validation metrics (KFP Metrics, shown in the run's UI).
        """
        return dsl.ContainerSpec(
            image=image,
            command=["python", "-m", "components.train_iforest"],
            args=[
                "--in-features", features.path,
                "--out-model", model.path,
                "--out-metrics", metrics.path,
                "--n-estimators", n_estimators,
                "--max-samples", max_samples,
                "--seed", seed,
                "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
            ],
        )  # fmt: skip

    return train_iforest
