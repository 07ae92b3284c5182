"""``features``'s inputs and outputs (``components.contracts.spec``)."""

from components.contracts.spec import Io, StageSpec

SPEC = StageSpec(
    module="features",
    summary="Build the point-in-time feature table and the per-cashier profiles.",
    inputs=(
        Io("historic", "Dataset", "Historic lake (Hive-partitioned Parquet) from ``split``."),
        Io(
            "time_splits",
            "Artifact",
            "Time boundaries JSON from ``split``; sets each row's ``subset``.",
        ),
    ),
    outputs=(
        Io(
            "features",
            "Dataset",
            "Feature table (one Parquet file): ids, subset, labels and every feature in "
            "``FEATURE_NAMES``.",
        ),
        Io(
            "profiles",
            "Dataset",
            "Per-cashier / per-store / global profile table (Parquet) shipped to serving "
            "for point-in-time lookups.",
        ),
    ),
)
