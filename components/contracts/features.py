"""Feature definitions: ONE implementation for the batch feature table and for single requests.

The pieces, and who uses them:

* ``raw_matrix(table)`` / ``raw_row(mapping)`` encode transactions as a float64 matrix of
  ``RAW_INPUTS`` (the only place where categories and timestamps become numbers).
* ``ProfileState`` keeps point-in-time running statistics (count, sum, sum of squares of each
  ``BEHAVIOURS`` metric) per cashier, per store and globally. ``advance`` returns, for each
  row of a time-ordered chunk, the statistics of everything *before* that row, then folds
  the chunk in. The final state is the profile table that serving looks up.
* ``ProfileIndex`` is that table in memory: ``prior_for(cashier_id, store_id)``. An unknown
  cashier has no history (n = 0) so its means fall back to its store's; an unknown store
  falls back to the global baseline.
* ``compute_features(raw, prior)`` is a numba kernel over rows: transaction-level features
  plus, per behaviour metric, the cashier's shrunk mean, its gap to the store mean and the
  row's z-score against the cashier's own baseline. Training calls it on millions of rows,
  serving on one; both get identical numbers (``tests/unit/test_features.py`` proves it).

Shrinkage: a mean at level L is ``(sum_L + K * mean_parent) / (n_L + K)`` with ``K =
SHRINKAGE`` pseudo-observations, so a new cashier starts at the store baseline and moves
towards its own behaviour as history accumulates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from components.contracts.schemas import LANE_TYPES, PAYMENT_TYPES

FEATURE_VERSION = 1
"""Bumped whenever a feature's definition changes; stored in bundles and checked by serving."""

ID_COLUMNS = ("transaction_id", "timestamp", "store_id", "cashier_id")
LABEL_COLUMNS = ("is_fraud", "fraud_type")
SUBSET_COLUMN = "subset"
SUBSETS = ("train", "valid", "test")

RAW_INPUTS = (
    "epoch_s",
    "is_self_checkout",
    "item_count",
    "total_amount",
    "void_count",
    "void_amount",
    "post_payment_void",
    "no_sale_count",
    "refund_amount",
    "refund_no_receipt",
    "discount_amount",
    "price_override_count",
    "payment_code",
    "weight_variance",
    "basket_weight_kg",
    "scan_duration_s",
)
"""Numeric encoding of one transaction, in column order of ``raw_matrix``."""

BEHAVIOURS = (
    "void_count",
    "void_ratio",
    "no_sale_count",
    "has_refund",
    "refund_no_receipt",
    "discount_ratio",
    "price_override_count",
    "abs_weight_variance",
    "secs_per_item",
    "post_payment_void",
)
"""Per-transaction behaviour metrics whose running statistics make the cashier profile."""

PROFILE_LEVELS = ("cashier", "store", "global")
STATS_WIDTH = 1 + 2 * len(BEHAVIOURS)
"""Per level: n, then sum of each behaviour, then sum of squares of each behaviour."""
PRIOR_WIDTH = STATS_WIDTH * len(PROFILE_LEVELS)

SHRINKAGE = 20.0
"""Pseudo-observations pulling a cashier's (store's) mean towards its store's (global) mean."""
Z_CLIP = 50.0

TRANSACTION_FEATURES = (
    "item_count",
    "total_amount",
    "log_total_amount",
    "avg_item_price",
    "void_count",
    "void_amount",
    "void_ratio",
    "post_payment_void",
    "no_sale_count",
    "refund_amount",
    "refund_ratio",
    "refund_no_receipt",
    "discount_amount",
    "discount_ratio",
    "price_override_count",
    "weight_variance",
    "abs_weight_variance",
    "basket_weight_kg",
    "kg_per_item",
    "scan_duration_s",
    "secs_per_item",
    "is_self_checkout",
    "is_cash",
    "payment_code",
    "hour_of_day",
    "day_of_week",
    "is_night",
)
PROFILE_FEATURES = (
    "cashier_log_txn_count",
    "store_log_txn_count",
    *(f"cashier_mean_{m}" for m in BEHAVIOURS),
    *(f"cashier_vs_store_{m}" for m in BEHAVIOURS),
    *(f"z_{m}" for m in BEHAVIOURS),
)
FEATURE_NAMES = TRANSACTION_FEATURES + PROFILE_FEATURES
"""Model input columns, in order."""
SIGNED_FEATURES = (
    "weight_variance",
    *(f"cashier_vs_store_{m}" for m in BEHAVIOURS),
    *(f"z_{m}" for m in BEHAVIOURS),
)
"""Features that may be negative; every other feature is >= 0 by construction (counts,
amounts, ratios, clock values, log counts, means of non-negative behaviours)."""

ANOMALY_FEATURES = (
    "void_ratio",
    "refund_ratio",
    "discount_ratio",
    "abs_weight_variance",
    "kg_per_item",
    "secs_per_item",
    "no_sale_count",
    "price_override_count",
    "z_abs_weight_variance",
    "z_no_sale_count",
)
"""The isolation forest's inputs: compact, scale-free behaviour signals. An isolation forest
splits on a random feature at each node, so an anomaly in one of 59 columns is rarely
isolated early; on these ten it is (novel-pattern recall at 1% FPR rose from ~0.03 to ~0.7
in our measurements). A subset of ``FEATURE_NAMES``; the exported forest still indexes the
full feature vector."""

REQUEST_DEFAULTS: dict[str, Any] = {
    "lane_type": "staffed",
    "void_amount": 0.0,
    "post_payment_void": False,
    "refund_amount": 0.0,
    "refund_no_receipt": False,
    "discount_amount": 0.0,
    "price_override_count": 0,
    "payment_type": "card",
}
"""Values for optional request fields that are not sent. ``timestamp`` defaults to now;
``basket_weight_kg`` and ``scan_duration_s`` default to typical per-item values times the
item count (``TYPICAL_KG_PER_ITEM``, ``TYPICAL_SECS_PER_ITEM``) so a terminal that does not
report them looks ordinary rather than suspicious."""
TYPICAL_KG_PER_ITEM = 0.45
TYPICAL_SECS_PER_ITEM = 3.5

_PAYMENT_CODE = {name: float(i) for i, name in enumerate(PAYMENT_TYPES)}
_SELF_CHECKOUT = LANE_TYPES.index("self_checkout")

PROFILE_SCHEMA = pa.schema(
    [
        pa.field("level", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("home_store_id", pa.string()),
        pa.field("n", pa.float64(), nullable=False),
        *(pa.field(f"sum_{m}", pa.float64(), nullable=False) for m in BEHAVIOURS),
        *(pa.field(f"sumsq_{m}", pa.float64(), nullable=False) for m in BEHAVIOURS),
    ]
)
"""Final point-in-time statistics: one row per cashier, per store and one global row."""
_STAT_COLUMNS = PROFILE_SCHEMA.names[3:]


# ---------------------------------------------------------------- encoding


def raw_matrix(table: pa.Table | pd.DataFrame) -> np.ndarray:
    """Encode transactions (RAW_TRANSACTION columns) as an (n, len(RAW_INPUTS)) float64 matrix."""
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    n = len(df)
    out = np.empty((n, len(RAW_INPUTS)), dtype=np.float64)
    ts = pd.to_datetime(df["timestamp"]).to_numpy(dtype="datetime64[us]")
    out[:, 0] = ts.astype(np.int64) / 1e6
    out[:, 1] = (df["lane_type"].to_numpy() == "self_checkout").astype(np.float64)
    for j, name in enumerate(RAW_INPUTS[2:], start=2):
        if name == "payment_code":
            codes = df["payment_type"].map(_PAYMENT_CODE)
            if codes.isna().any():
                bad = df["payment_type"][codes.isna()].iloc[0]
                raise ValueError(f"unknown payment_type {bad!r}")
            out[:, j] = codes.to_numpy(dtype=np.float64)
        else:
            out[:, j] = df[name].to_numpy(dtype=np.float64)
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


def raw_row(record: Mapping[str, Any], out: np.ndarray | None = None) -> np.ndarray:
    """Encode one transaction (an API request) as a (1, len(RAW_INPUTS)) matrix.

    Optional fields missing from ``record`` (or None) take ``REQUEST_DEFAULTS``; the
    timestamp defaults to now. ``out`` lets a hot path reuse a buffer.
    """

    def get(name: str) -> Any:
        value = record.get(name)
        return REQUEST_DEFAULTS.get(name) if value is None else value

    items = float(record["item_count"])
    weight = record.get("basket_weight_kg")
    duration = record.get("scan_duration_s")
    payment = get("payment_type")
    if payment not in _PAYMENT_CODE:
        raise ValueError(f"unknown payment_type {payment!r}")
    row = out if out is not None else np.empty((1, len(RAW_INPUTS)), dtype=np.float64)
    row[0, :] = (
        _epoch_seconds(record.get("timestamp")),
        1.0 if get("lane_type") == LANE_TYPES[_SELF_CHECKOUT] else 0.0,
        items,
        float(record["total_amount"]),
        float(record["void_count"]),
        float(get("void_amount")),
        float(bool(get("post_payment_void"))),
        float(record["no_sale_count"]),
        float(get("refund_amount")),
        float(bool(get("refund_no_receipt"))),
        float(get("discount_amount")),
        float(get("price_override_count")),
        _PAYMENT_CODE[payment],
        float(record["weight_variance"]),
        TYPICAL_KG_PER_ITEM * items if weight is None else float(weight),
        TYPICAL_SECS_PER_ITEM * items if duration is None else float(duration),
    )
    return row


# ---------------------------------------------------------------- numba kernels

_NB = len(BEHAVIOURS)
_NT = len(TRANSACTION_FEATURES)


@numba.njit(cache=True, nogil=True)
def _behaviours(r: np.ndarray, m: np.ndarray) -> None:
    items = max(r[2], 1.0)
    m[0] = r[4]
    m[1] = r[5] / (r[3] + r[5] + 1.0)
    m[2] = r[7]
    m[3] = 1.0 if r[8] > 0.0 else 0.0
    m[4] = r[9]
    m[5] = r[10] / (r[3] + r[10] + 1.0)
    m[6] = r[11]
    m[7] = abs(r[13])
    m[8] = r[15] / items
    m[9] = r[6]


@numba.njit(cache=True, nogil=True)
def _behaviour_matrix(raw: np.ndarray) -> np.ndarray:
    n = raw.shape[0]
    out = np.empty((n, 1 + 2 * _NB))
    m = np.empty(_NB)
    for i in range(n):
        _behaviours(raw[i], m)
        out[i, 0] = 1.0
        for k in range(_NB):
            out[i, 1 + k] = m[k]
            out[i, 1 + _NB + k] = m[k] * m[k]
    return out


@numba.njit(cache=True, nogil=True)
def _features_row(r: np.ndarray, p: np.ndarray, m: np.ndarray, f: np.ndarray) -> None:
    items = max(r[2], 1.0)
    total = r[3]
    _behaviours(r, m)
    f[0] = r[2]
    f[1] = total
    f[2] = math.log1p(max(total, 0.0))
    f[3] = total / items
    f[4] = r[4]
    f[5] = r[5]
    f[6] = m[1]
    f[7] = r[6]
    f[8] = r[7]
    f[9] = r[8]
    f[10] = r[8] / (total + 1.0)
    f[11] = r[9]
    f[12] = r[10]
    f[13] = m[5]
    f[14] = r[11]
    f[15] = r[13]
    f[16] = m[7]
    f[17] = r[14]
    f[18] = r[14] / items
    f[19] = r[15]
    f[20] = m[8]
    f[21] = r[1]
    f[22] = 1.0 if r[12] == 0.0 else 0.0
    f[23] = r[12]
    sec_of_day = r[0] - math.floor(r[0] / 86400.0) * 86400.0
    hour = sec_of_day / 3600.0
    f[24] = hour
    f[25] = (math.floor(r[0] / 86400.0) + 3.0) % 7.0
    f[26] = 1.0 if (hour < 6.0 or hour >= 22.0) else 0.0

    w = 1 + 2 * _NB
    c_n = p[0]
    s_n = p[w]
    g_n = p[2 * w]
    f[_NT] = math.log1p(c_n)
    f[_NT + 1] = math.log1p(s_n)
    for k in range(_NB):
        g_mean = p[2 * w + 1 + k] / max(g_n, 1.0)
        g_e2 = p[2 * w + 1 + _NB + k] / max(g_n, 1.0)
        s_mean = (p[w + 1 + k] + SHRINKAGE * g_mean) / (s_n + SHRINKAGE)
        s_e2 = (p[w + 1 + _NB + k] + SHRINKAGE * g_e2) / (s_n + SHRINKAGE)
        c_mean = (p[1 + k] + SHRINKAGE * s_mean) / (c_n + SHRINKAGE)
        c_e2 = (p[1 + _NB + k] + SHRINKAGE * s_e2) / (c_n + SHRINKAGE)
        c_var = max(c_e2 - c_mean * c_mean, 0.0)
        z = (m[k] - c_mean) / math.sqrt(c_var + 1e-6)
        f[_NT + 2 + k] = c_mean
        f[_NT + 2 + _NB + k] = c_mean - s_mean
        f[_NT + 2 + 2 * _NB + k] = min(max(z, -Z_CLIP), Z_CLIP)


@numba.njit(cache=True, nogil=True)
def _features_batch(raw: np.ndarray, prior: np.ndarray, out: np.ndarray) -> None:
    m = np.empty(_NB)
    for i in range(raw.shape[0]):
        _features_row(raw[i], prior[i], m, out[i])


_CHUNK = 4096
"""Rows per task of the parallel kernel; smaller inputs use the serial one (no thread hand-off)."""


@numba.njit(cache=True, nogil=True, parallel=True)
def _features_batch_parallel(raw: np.ndarray, prior: np.ndarray, out: np.ndarray) -> None:
    n = raw.shape[0]
    for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        _features_batch(raw[lo : lo + _CHUNK], prior[lo : lo + _CHUNK], out[lo : lo + _CHUNK])


def compute_features(
    raw: np.ndarray, prior: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Features for each row of ``raw`` given its point-in-time ``prior`` statistics.

    Args:
        raw: (n, len(RAW_INPUTS)) from ``raw_matrix`` or ``raw_row``.
        prior: (n, PRIOR_WIDTH) from ``ProfileState.advance`` or ``ProfileIndex.prior_for``.
        out: Optional (n, len(FEATURE_NAMES)) float64 buffer to fill (hot paths reuse one).

    Returns:
        (n, len(FEATURE_NAMES)) float64, columns in ``FEATURE_NAMES`` order.
    """
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    prior = np.ascontiguousarray(prior, dtype=np.float64)
    if prior.ndim == 1:
        prior = prior.reshape(1, -1)
    if raw.shape[1] != len(RAW_INPUTS) or prior.shape != (raw.shape[0], PRIOR_WIDTH):
        raise ValueError(
            f"compute_features: raw {raw.shape} / prior {prior.shape} do not match "
            f"({len(RAW_INPUTS)} raw inputs, {PRIOR_WIDTH} prior statistics per row)"
        )
    if out is None:
        out = np.empty((raw.shape[0], len(FEATURE_NAMES)), dtype=np.float64)
    if raw.shape[0] >= 2 * _CHUNK:  # rows are independent: chunks run on numba's threads
        _features_batch_parallel(raw, prior, out)
    else:
        _features_batch(raw, prior, out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels now rather than on first use."""
    compute_features(np.zeros((1, len(RAW_INPUTS))), np.zeros((1, PRIOR_WIDTH)))
    _behaviour_matrix(np.zeros((1, len(RAW_INPUTS))))


# ---------------------------------------------------------------- point-in-time profiles


class ProfileState:
    """Running per-cashier, per-store and global statistics over time-ordered transactions."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, np.ndarray]] = {"cashier": {}, "store": {}}
        self._global = np.zeros(STATS_WIDTH)
        self._home_store: dict[str, str] = {}

    def advance(
        self, raw: np.ndarray, cashier_ids: Sequence[str], store_ids: Sequence[str]
    ) -> np.ndarray:
        """Return each row's prior statistics, then fold the rows into the state.

        Rows must be in time order (and every earlier chunk must already have been
        advanced): row i's prior covers exactly the rows before it.

        Returns:
            (n, PRIOR_WIDTH) float64.
        """
        values = _behaviour_matrix(np.ascontiguousarray(raw, dtype=np.float64))
        n = values.shape[0]
        prior = np.empty((n, PRIOR_WIDTH))
        for j, (level, keys) in enumerate((("cashier", cashier_ids), ("store", store_ids))):
            codes, uniques = pd.factorize(np.asarray(keys), sort=False)
            table = self._stats[level]
            start = np.stack([table.get(k, np.zeros(STATS_WIDTH)) for k in uniques])
            running = pd.DataFrame(values).groupby(codes, sort=False).cumsum().to_numpy()
            prior[:, j * STATS_WIDTH : (j + 1) * STATS_WIDTH] = running - values + start[codes]
            totals = np.zeros_like(start)
            np.add.at(totals, codes, values)
            for idx, key in enumerate(uniques):
                table[key] = start[idx] + totals[idx]
        prior[:, 2 * STATS_WIDTH :] = np.cumsum(values, axis=0) - values + self._global
        self._global = self._global + values.sum(axis=0)
        self._home_store.update(zip(cashier_ids, store_ids, strict=True))
        return prior

    def to_table(self) -> pa.Table:
        """The profile table (PROFILE_SCHEMA) that serving loads into a ``ProfileIndex``."""
        rows_level, rows_key, rows_home, stats = [], [], [], []
        for level in ("cashier", "store"):
            for key in sorted(self._stats[level]):
                rows_level.append(level)
                rows_key.append(key)
                rows_home.append(self._home_store.get(key) if level == "cashier" else None)
                stats.append(self._stats[level][key])
        rows_level.append("global")
        rows_key.append("*")
        rows_home.append(None)
        stats.append(self._global)
        matrix = np.vstack(stats)
        arrays = [pa.array(rows_level), pa.array(rows_key), pa.array(rows_home, pa.string())]
        arrays += [pa.array(matrix[:, j]) for j in range(STATS_WIDTH)]
        return pa.Table.from_arrays(arrays, schema=PROFILE_SCHEMA)


class ProfileIndex:
    """In-memory lookup of prior statistics for requests (serving side of ``ProfileState``)."""

    def __init__(self, table: pa.Table):
        df = table.to_pandas()
        stats = df[list(_STAT_COLUMNS)].to_numpy(dtype=np.float64)
        levels = df["level"].to_numpy()
        keys = df["key"].to_numpy()
        glob = stats[levels == "global"]
        self.global_stats = glob[0] if len(glob) else np.zeros(STATS_WIDTH)
        self.stores = {k: stats[i] for i, k in enumerate(keys) if levels[i] == "store"}
        self.cashiers = {k: stats[i] for i, k in enumerate(keys) if levels[i] == "cashier"}
        self.home_store = {
            k: h
            for k, h, lv in zip(keys, df["home_store_id"], levels, strict=True)
            if lv == "cashier"
        }
        self._zeros = np.zeros(STATS_WIDTH)
        # Precomputed full prior vectors for the common case: a known cashier in its home store.
        self._home_prior = {
            k: np.concatenate(
                [s, self.stores.get(self.home_store[k], self._zeros), self.global_stats]
            )
            for k, s in self.cashiers.items()
        }

    @classmethod
    def from_table(cls, table: pa.Table) -> ProfileIndex:
        return cls(table)

    def store_for(self, cashier_id: str, store_id: str | None = None) -> str | None:
        """The request's store, or the cashier's home store when the request names none."""
        return store_id or self.home_store.get(cashier_id)

    def prior_for(self, cashier_id: str, store_id: str | None = None) -> np.ndarray:
        """(PRIOR_WIDTH,) statistics for a request: unknown cashier/store fall back upwards."""
        if store_id is None or self.home_store.get(cashier_id) == store_id:
            cached = self._home_prior.get(cashier_id)
            if cached is not None:
                return cached
        store = self.store_for(cashier_id, store_id)
        return np.concatenate(
            [
                self.cashiers.get(cashier_id, self._zeros),
                self.stores.get(store, self._zeros) if store else self._zeros,
                self.global_stats,
            ]
        )
