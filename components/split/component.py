"""KFP v2 container component for the ``split`` stage (``python -m components.split``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output


def build(image: str):
    """Return the ``split`` container component that runs in ``image``.

    Args:
        image: Full image reference, e.g. ``ghcr.io/cashier-integrity/split:latest``.
    """

    @dsl.container_component
    def split(
        transactions: Input[Dataset],
        historic: Output[Dataset],
        live_stream: Output[Dataset],
        live_labels: Output[Dataset],
        time_splits: Output[Artifact],
        live_days: int = 3,
        valid_days: int = 4,
        test_days: int = 5,
    ):
        """Cut transactions by time into a historic lake and a held-out live stream.

        Args:
            transactions: Labelled transactions dataset folder from ``datagen``.
            live_days: Number of final days held out as the live stream.
            valid_days: Number of days before the test window used for validation.
            test_days: Number of days before the live window used for the offline test.

        Returns:
            historic: Output historic lake, Parquet Hive-partitioned by ``date=YYYY-MM-DD``.
            live_stream: Output live stream, JSON Lines of raw transactions in time order
                (labels removed), replayed by the traffic simulator.
            live_labels: Output labels of the live stream (Parquet), for online evaluation.
            time_splits: Output JSON with the ISO timestamps ``train_end``, ``valid_end``,
                ``historic_end`` and ``live_end``.
        """
        return dsl.ContainerSpec(
            image=image,
            command=["python", "-m", "components.split"],
            args=[
                "--in-transactions", transactions.path,
                "--out-historic", historic.path,
                "--out-live-stream", live_stream.path,
                "--out-live-labels", live_labels.path,
                "--out-time-splits", time_splits.path,
                "--live-days", live_days,
                "--valid-days", valid_days,
                "--test-days", test_days,
            ],
        )  # fmt: skip

    return split
