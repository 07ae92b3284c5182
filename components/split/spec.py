"""``split``'s input, outputs and time-window parameters (``components.contracts.spec``)."""

from components.contracts.spec import Io, Param, StageSpec

SPEC = StageSpec(
    module="split",
    summary="Cut transactions by time into a historic lake and a held-out live stream.",
    inputs=(
        Io(
            "transactions",
            "Dataset",
            "Labelled transactions from ``datagen``: dataset folder or Parquet file.",
        ),
    ),
    outputs=(
        Io("historic", "Dataset", "Historic lake: Parquet, Hive-partitioned by date=YYYY-MM-DD."),
        Io(
            "live_stream",
            "Dataset",
            "Live stream: JSON Lines of raw transactions in time order (labels removed), "
            "replayed by the traffic simulator.",
        ),
        Io(
            "live_labels",
            "Dataset",
            "Labels of the live stream (Parquet: transaction_id, is_fraud, fraud_type and the "
            "cohort labels cashier_hired_on, cashier_turned_on, cashier_left_on), "
            "for online evaluation.",
        ),
        Io(
            "time_splits",
            "Artifact",
            "JSON with the ISO timestamps train_end, valid_end, historic_end and live_end, "
            "and the held-out cashier ids (holdout_cashiers).",
        ),
    ),
    params=(
        Param("live_days", int, 3, "Number of final days held out as the live stream (>= 1)."),
        Param(
            "valid_days",
            int,
            4,
            "Number of days before the test window used for validation (>= 1).",
        ),
        Param(
            "test_days",
            int,
            5,
            "Number of days before the live window used for the offline test (>= 1).",
        ),
        Param(
            "holdout_cashier_fraction",
            float,
            0.3,
            "Share of cashiers (stratified: dishonest and honest alike) whose train and valid "
            "rows no model sees; their test rows are the unseen-cashiers cohort. In [0, 1).",
        ),
        Param("holdout_seed", int, 13, "Seed of the hash that picks the held-out cashiers."),
    ),
)
