"""Feature-table logic: time subsets and point-in-time features for one time-ordered chunk.

Pure functions over DataFrames/Arrow; the feature math itself lives in
``components.contracts.features`` so serving computes exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from components.contracts import features as F
from components.contracts.schemas import TIMESTAMP, InputError


@dataclass(frozen=True)
class TimeSplits:
    """Time boundaries written by ``split``: train < train_end <= valid < valid_end <= test."""

    train_end: datetime
    valid_end: datetime
    historic_end: datetime

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "time splits") -> TimeSplits:
        if not isinstance(obj, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(obj).__name__}")
        values = {}
        for key in ("train_end", "valid_end", "historic_end"):
            if key not in obj:
                raise InputError(f"{source}: missing key '{key}'")
            try:
                values[key] = datetime.fromisoformat(str(obj[key]))
            except ValueError as exc:
                raise InputError(f"{source}: key '{key}' is not an ISO timestamp ({exc})") from exc
        splits = cls(**values)
        if not splits.train_end <= splits.valid_end <= splits.historic_end:
            raise InputError(
                f"{source}: keys out of order (need train_end <= valid_end <= historic_end): {obj}"
            )
        return splits


def assign_subset(timestamps: pd.Series | np.ndarray, splits: TimeSplits) -> np.ndarray:
    """'train' / 'valid' / 'test' by time; rows at or after ``historic_end`` are an error."""
    ts = pd.to_datetime(np.asarray(timestamps))
    late = int((ts >= pd.Timestamp(splits.historic_end)).sum()) if len(ts) else 0
    if late:
        raise InputError(
            f"column 'timestamp' has {late} row(s) at or after historic_end "
            f"{splits.historic_end} (latest {ts.max()}): live-period rows must not be in the "
            "historic lake"
        )
    return np.where(
        ts < pd.Timestamp(splits.train_end),
        "train",
        np.where(ts < pd.Timestamp(splits.valid_end), "valid", "test"),
    )


FEATURE_TABLE_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("store_id", pa.string(), nullable=False),
        pa.field("cashier_id", pa.string(), nullable=False),
        pa.field(F.SUBSET_COLUMN, pa.string(), nullable=False),
        pa.field("is_fraud", pa.bool_(), nullable=False),
        pa.field("fraud_type", pa.string(), nullable=False),
        *(pa.field(name, pa.float64(), nullable=False) for name in F.FEATURE_NAMES),
    ]
)
"""The features table: ids, time subset, labels, then ``FEATURE_NAMES`` in order."""


def feature_chunk(tx: pd.DataFrame, state: F.ProfileState, splits: TimeSplits) -> pa.Table:
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
        F.SUBSET_COLUMN: assign_subset(tx["timestamp"], splits),
        "is_fraud": tx["is_fraud"].to_numpy(dtype=bool),
        "fraud_type": tx["fraud_type"].to_numpy(),
    }
    arrays = [pa.array(columns[f.name], type=f.type) for f in list(FEATURE_TABLE_SCHEMA)[:7]]
    arrays += [pa.array(values[:, j]) for j in range(values.shape[1])]
    return pa.Table.from_arrays(arrays, schema=FEATURE_TABLE_SCHEMA)
