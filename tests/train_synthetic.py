"""Synthetic features tables for the training-stage tests (train-xgb, train-iforest).

Columns come from ``components.contracts.features`` (never hard-coded here): ID columns,
the subset column, the labels and every feature as float64. Each fraud type shifts its own
few features so the supervised model has something to learn, and fraud rows are sparse
outliers so the isolation forest has something to isolate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from components.contracts.features import (
    FEATURE_NAMES,
    ID_COLUMNS,
    LABEL_COLUMNS,
    SIGNED_FEATURES,
)
from components.contracts.layout import SUBSET_COLUMN
from components.contracts.schemas import FRAUD_TYPES

FRAUD_KINDS = tuple(t for t in FRAUD_TYPES if t != "none")


def features_table(
    rows: int = 4000,
    *,
    fraud_rate: float = 0.05,
    seed: int = 0,
    fractions: tuple[float, float] = (0.6, 0.2),
    signal: float = 3.0,
) -> pa.Table:
    """A features table of ``rows`` time-ordered rows split train/valid/test by ``fractions``.

    Args:
        rows: Number of rows.
        fraud_rate: Share of fraud rows; spread evenly over the fraud types.
        seed: Random seed.
        fractions: Shares of train and valid (the rest is test), in time order.
        signal: Shift (in standard deviations) a fraud type applies to its features.
    """
    rng = np.random.default_rng(seed)
    n_features = len(FEATURE_NAMES)
    X = rng.normal(size=(rows, n_features))
    is_fraud = rng.random(rows) < fraud_rate
    kinds = rng.integers(0, len(FRAUD_KINDS), size=rows)
    fraud_type = np.where(is_fraud, np.asarray(FRAUD_KINDS, dtype=object)[kinds], "none")
    for k, _ in enumerate(FRAUD_KINDS):
        mask = is_fraud & (kinds == k)
        cols = [(3 * k + j) % n_features for j in range(3)]
        X[np.ix_(mask, cols)] += signal
    unsigned = [j for j, name in enumerate(FEATURE_NAMES) if name not in SIGNED_FEATURES]
    X[:, unsigned] = np.abs(X[:, unsigned])  # what training accepts: these are >= 0 by nature
    n_train = int(rows * fractions[0])
    n_valid = int(rows * fractions[1])
    subset = np.array(
        ["train"] * n_train + ["valid"] * n_valid + ["test"] * (rows - n_train - n_valid)
    )
    start = datetime(2026, 1, 5)
    columns: dict[str, pa.Array] = {}
    ids = {
        "transaction_id": pa.array([f"t{i:07d}" for i in range(rows)]),
        "timestamp": pa.array(
            [start + timedelta(minutes=i) for i in range(rows)], type=pa.timestamp("us")
        ),
        "store_id": pa.array([f"S{i % 3:02d}" for i in range(rows)]),
        "cashier_id": pa.array([f"S{i % 3:02d}-C{i % 7:02d}" for i in range(rows)]),
    }
    for name in ID_COLUMNS:
        columns[name] = ids[name]
    columns[SUBSET_COLUMN] = pa.array(subset)
    label, type_column = LABEL_COLUMNS
    columns[label] = pa.array(is_fraud)
    columns[type_column] = pa.array(fraud_type.tolist(), type=pa.string())
    for j, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(X[:, j], type=pa.float64())
    return pa.table(columns)
