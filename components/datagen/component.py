"""KFP v2 container component for the ``datagen`` stage.

The component's command is exactly the stage CLI (``python -m components.datagen``) inside the
stage image; ``build(image)`` returns the component so the image name comes from settings at
compile time, never at import time.
"""

from kfp import dsl
from kfp.dsl import Dataset, Output


def build(image: str):
    """Return the ``datagen`` container component that runs in ``image``.

    Args:
        image: Full image reference, e.g. ``ghcr.io/cashier-integrity/datagen:latest``.
    """

    @dsl.container_component
    def datagen(
        transactions: Output[Dataset],
        rows: int = 200_000,
        days: int = 28,
        stores: int = 8,
        cashiers_per_store: int = 12,
        fraud_rate: float = 0.02,
        seed: int = 42,
        start_date: str = "2026-01-05",
        chunk_rows: int = 1_000_000,
    ):
        """Generate synthetic labelled POS transactions with injected fraud patterns.

        Args:
            rows: Number of transactions to generate.
            days: Number of calendar days the transactions span.
            stores: Number of stores.
            cashiers_per_store: Number of cashiers employed per store.
            fraud_rate: Fraction of transactions that carry a fraud pattern.
            seed: Random seed; the same seed and sizes give byte-identical data.
            start_date: First day of the generated period (YYYY-MM-DD).
            chunk_rows: Rows generated per chunk (bounds memory).

        Returns:
            transactions: Output dataset folder of labelled transactions (Parquet,
                ``LABELLED_TRANSACTION`` schema, ``_SUCCESS`` marker).
        """
        return dsl.ContainerSpec(
            image=image,
            command=["python", "-m", "components.datagen"],
            args=[
                "--out-transactions", transactions.path,
                "--rows", rows,
                "--days", days,
                "--stores", stores,
                "--cashiers-per-store", cashiers_per_store,
                "--fraud-rate", fraud_rate,
                "--seed", seed,
                "--start-date", start_date,
                "--chunk-rows", chunk_rows,
            ],
        )  # fmt: skip

    return datagen
