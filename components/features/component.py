"""KFP v2 container component for the ``features`` stage (``python -m components.features``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output


def build(image: str):
    """Return the ``features`` container component that runs in ``image``.

    Args:
        image: Full image reference, e.g. ``ghcr.io/cashier-integrity/features:latest``.
    """

    @dsl.container_component
    def features(
        historic: Input[Dataset],
        time_splits: Input[Artifact],
        features: Output[Dataset],
        profiles: Output[Dataset],
    ):
        """Build the point-in-time feature table and the per-cashier profiles.

        Args:
            historic: Historic lake (Hive-partitioned Parquet) from ``split``.
            time_splits: Time boundaries JSON from ``split``; sets each row's ``subset``.

        Returns:
            features: Output feature table (one Parquet file): ids, subset, labels and
                every feature in ``FEATURE_NAMES``.
            profiles: Output per-cashier / per-store / global profile table (Parquet)
                shipped to serving for point-in-time lookups.
        """
        return dsl.ContainerSpec(
            image=image,
            command=["python", "-m", "components.features"],
            args=[
                "--in-historic", historic.path,
                "--in-time-splits", time_splits.path,
                "--out-features", features.path,
                "--out-profiles", profiles.path,
            ],
        )  # fmt: skip

    return features
