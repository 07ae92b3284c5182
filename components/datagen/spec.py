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
            "Labelled transactions: Parquet dataset folder (``GENERATED_TRANSACTION`` schema: "
            "raw fields, labels and cashier cohort dates; ``_SUCCESS`` marker), sorted by time.",
        ),
    ),
    params=(
        *params_from(
            DatagenParams,
            {
                "rows": "Number of transactions to generate (> 0).",
                "days": "Number of calendar days the transactions span.",
                "stores": "Number of stores.",
                "cashiers_per_store": "Staff slots per store (each with a shift and days off; "
                "a leaver's slot passes to a new hire, so more cashiers appear over the period).",
                "fraud_rate": "Fraction of transactions that carry a fraud pattern, in [0, 0.5] "
                "(thieves' share is capped per shift; the rest is customer scan avoidance and "
                "honest cashiers' opportunistic fraud).",
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
