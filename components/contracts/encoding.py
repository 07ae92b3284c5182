"""Transactions as numbers: ``raw_matrix(table)`` / ``raw_row(mapping)`` encode them as a
float64 matrix of ``RAW_INPUTS`` (the only place where categories, timestamps and the
presence of a customer token become numbers). Re-exported by ``features``.

Missing is missing: an optional field a client did not send (or a null in a table) is NaN
in the encoding, never a benign default, so the models see its absence (XGBoost routes NaN
down each split's learned default branch). Only ``timestamp`` (now) and ``store_id`` (the
cashier's home store, ``ProfileIndex.store_for``) are filled in.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from components.contracts.feature_columns import MASKABLE_FIELDS, RAW_INPUTS, Raw
from components.contracts.schemas import LANE_TYPES, PAYMENT_TYPES

_PAYMENT_CODE = {name: float(i) for i, name in enumerate(PAYMENT_TYPES)}
_SELF_CHECKOUT = LANE_TYPES.index("self_checkout")
_NAN = float("nan")

_RAW_COPIED = tuple(
    Raw[name]
    for name in RAW_INPUTS
    if name not in ("epoch_s", "is_self_checkout", "payment_code", "has_customer_token")
)
"""Raw inputs that are a transaction column as is."""
_in_raw_order = operator.itemgetter(*RAW_INPUTS)


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """A column of ``df``; an optional column the table lacks reads as all missing."""
    if name in df.columns:
        return df[name]
    if name in MASKABLE_FIELDS:
        return pd.Series(None, index=df.index, dtype=object)
    raise KeyError(name)


def raw_matrix(table: pa.Table | pd.DataFrame) -> np.ndarray:
    """Encode transactions (RAW_TRANSACTION columns) as an (n, len(RAW_INPUTS)) float64 matrix.

    A null (or absent) optional field is NaN; see ``MISSING_INPUT_FEATURES``."""
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    n = len(df)
    out = np.empty((n, len(RAW_INPUTS)), dtype=np.float64)
    ts = pd.to_datetime(df["timestamp"]).to_numpy(dtype="datetime64[us]")
    out[:, Raw.epoch_s] = ts.astype(np.int64) / 1e6
    lane = _column(df, "lane_type")
    out[:, Raw.is_self_checkout] = np.where(
        lane.isna(), np.nan, (lane.to_numpy() == LANE_TYPES[_SELF_CHECKOUT]).astype(np.float64)
    )
    payment = _column(df, "payment_type")
    codes = payment.map(_PAYMENT_CODE)
    unknown = codes.isna() & payment.notna()
    if unknown.any():
        raise ValueError(f"unknown payment_type {payment[unknown].iloc[0]!r}")
    out[:, Raw.payment_code] = codes.to_numpy(dtype=np.float64, na_value=np.nan)
    out[:, Raw.has_customer_token] = np.where(_column(df, "customer_token").isna(), np.nan, 1.0)
    for j in _RAW_COPIED:
        col = _column(df, RAW_INPUTS[j])
        out[:, j] = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _epoch_seconds(value: Any) -> float:
    if value is None:
        value = datetime.now()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.replace(tzinfo=None)
        return (value - datetime(1970, 1, 1)).total_seconds()
    return pd.Timestamp(value).to_datetime64().astype("datetime64[us]").astype(np.int64) / 1e6


def _number(value: Any) -> float:
    return _NAN if value is None else float(value)


def raw_row(record: Mapping[str, Any], out: np.ndarray | None = None) -> np.ndarray:
    """Encode one transaction (an API request) as a (1, len(RAW_INPUTS)) matrix.

    Optional fields missing from ``record`` (or None) are NaN (``MISSING_INPUT_FEATURES``);
    the timestamp defaults to now. ``out`` lets a hot path reuse a buffer.
    """
    get = record.get
    payment = get("payment_type")
    if payment is not None and payment not in _PAYMENT_CODE:
        raise ValueError(f"unknown payment_type {payment!r}")
    lane = get("lane_type")
    token = get("customer_token")
    row = out if out is not None else np.empty((1, len(RAW_INPUTS)), dtype=np.float64)
    row[0, :] = _in_raw_order(
        {
            "epoch_s": _epoch_seconds(get("timestamp")),
            "is_self_checkout": _NAN if lane is None else float(lane == LANE_TYPES[_SELF_CHECKOUT]),
            "item_count": float(record["item_count"]),
            "total_amount": float(record["total_amount"]),
            "void_count": float(record["void_count"]),
            "void_amount": _number(get("void_amount")),
            "post_payment_void": _number(get("post_payment_void")),
            "no_sale_count": float(record["no_sale_count"]),
            "refund_amount": _number(get("refund_amount")),
            "refund_no_receipt": _number(get("refund_no_receipt")),
            "discount_amount": _number(get("discount_amount")),
            "price_override_count": _number(get("price_override_count")),
            "payment_code": _NAN if payment is None else _PAYMENT_CODE[payment],
            "weight_variance": float(record["weight_variance"]),
            "basket_weight_kg": _number(get("basket_weight_kg")),
            "scan_duration_s": _number(get("scan_duration_s")),
            "has_customer_token": _NAN if token is None or token != token else 1.0,  # NaN: null
        }
    )
    return row
