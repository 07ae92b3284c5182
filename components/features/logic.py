"""Feature-table logic: time subsets and point-in-time features for one time-ordered chunk.

Pure functions over DataFrames/Arrow; the feature math itself lives in
``components.contracts.features`` so serving computes exactly the same numbers.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from components.contracts import features as F
from components.contracts.layout import SUBSET_COLUMN, TimeBoundaries, assign_subset
from components.contracts.schemas import COHORT_LABELS, LABELLED_TRANSACTION

FEATURE_TABLE_SCHEMA = pa.schema(
    [
        *(LABELLED_TRANSACTION.field(name) for name in F.ID_COLUMNS),
        pa.field(SUBSET_COLUMN, pa.string(), nullable=False),
        *(LABELLED_TRANSACTION.field(name) for name in F.LABEL_COLUMNS),
        *COHORT_LABELS,  # label-side: for evaluate's cohort table, never a model input
        *(pa.field(name, pa.float64(), nullable=False) for name in F.FEATURE_NAMES),
    ]
)
"""The features table: ids, time subset, labels, cohort labels (null when the data has
none), then ``FEATURE_NAMES`` in order."""


def feature_chunk(tx: pd.DataFrame, state: F.ProfileState, splits: TimeBoundaries) -> pa.Table:
    """Point-in-time features for one chunk of transactions, advancing ``state``.

    The chunk is sorted by (timestamp, transaction_id); every earlier chunk must already
    have been passed through the same ``state``.
    """
    tx = tx.sort_values(["timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    raw = F.raw_matrix(tx)
    prior = state.advance(raw, tx["cashier_id"].to_numpy(), tx["store_id"].to_numpy())
    values = F.compute_features(raw, prior)
    columns = {
        "transaction_id": tx["transaction_id"].to_numpy(),
        "timestamp": tx["timestamp"].to_numpy(dtype="datetime64[us]"),
        "store_id": tx["store_id"].to_numpy(),
        "cashier_id": tx["cashier_id"].to_numpy(),
        SUBSET_COLUMN: assign_subset(
            tx["timestamp"], splits, historic_only=True, cashier_ids=tx["cashier_id"]
        ),
        "is_fraud": tx["is_fraud"].to_numpy(dtype=bool),
        "fraud_type": tx["fraud_type"].to_numpy(),
        **{c: tx[c] if c in tx else [None] * len(tx) for c in COHORT_LABELS.names},
    }
    head = list(FEATURE_TABLE_SCHEMA)[: len(columns)]
    arrays = [pa.array(columns[f.name], type=f.type) for f in head]
    arrays += [pa.array(values[:, j]) for j in range(values.shape[1])]
    return pa.Table.from_arrays(arrays, schema=FEATURE_TABLE_SCHEMA)
