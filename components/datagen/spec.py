"""The ``datagen`` stage's interface, declared once: the CLI, the KFP container component
(``component.py``), the pipeline defaults and the README table come from ``SPEC``.

The generation defaults are ``DatagenParams``' own (``components/datagen/logic.py``).
"""

from components.contracts.spec import Io, Param, StageSpec
from components.datagen.logic import DatagenParams as _D

SPEC = StageSpec(
    module="datagen",
    summary="Generate synthetic labelled POS transactions with injected fraud patterns.",
    outputs=(
        Io(
            "transactions",
            "Dataset",
            "Labelled transactions: Parquet dataset folder (``LABELLED_TRANSACTION`` schema, "
            "``_SUCCESS`` marker), sorted by time.",
        ),
    ),
    params=(
        Param("rows", int, _D.rows, "Number of transactions to generate (> 0)."),
        Param("days", int, _D.days, "Number of calendar days the transactions span."),
        Param("stores", int, _D.stores, "Number of stores."),
        Param(
            "cashiers_per_store",
            int,
            _D.cashiers_per_store,
            "Cashiers employed per store (each works in one home store).",
        ),
        Param(
            "fraud_rate",
            float,
            _D.fraud_rate,
            "Fraction of transactions that carry a fraud pattern, in [0, 0.5].",
        ),
        Param("seed", int, _D.seed, "Random seed; the same seed and sizes give identical data."),
        Param(
            "start_date",
            str,
            _D.start_date.isoformat(),
            "First day of the generated period (YYYY-MM-DD).",
        ),
        Param(
            "chunk_rows",
            int,
            1_000_000,
            "Rows per written Parquet file; bounds memory, never changes the data.",
        ),
    ),
)
