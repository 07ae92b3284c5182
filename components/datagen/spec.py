"""``datagen``'s parameters and output (``components.contracts.spec``): the generation
knobs' names, types and defaults are ``DatagenParams``' own (``logic.py``)."""

from components.contracts.spec import Io, Param, StageSpec, params_from
from components.datagen.logic import DatagenParams

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
        *params_from(
            DatagenParams,
            {
                "rows": "Number of transactions to generate (> 0).",
                "days": "Number of calendar days the transactions span.",
                "stores": "Number of stores.",
                "cashiers_per_store": "Cashiers employed per store (each works in one home store).",
                "fraud_rate": "Fraction of transactions that carry a fraud pattern, in [0, 0.5].",
                "seed": "Random seed; the same seed and sizes give identical data.",
                "start_date": "First day of the generated period (YYYY-MM-DD).",
            },
        ),
        Param(
            "chunk_rows",
            int,
            1_000_000,
            "Rows per written Parquet file; bounds memory, never changes the data.",
        ),
    ),
)
