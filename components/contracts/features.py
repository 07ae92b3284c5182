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
  row's z-score against the cashier's own baseline; then the cashier's current shift, its
  last hour and the lane's seconds-per-item norm (``windows``: the prior carries the
  cashier's window state, folded row by row by the same code in batch and online). Training calls it on millions of rows,
  serving on one; both get identical numbers (``tests/unit/test_features.py`` proves it).

Columns are declared in ``feature_columns`` (re-exported here) and every kernel reads and
writes them by name (``r[Raw.total_amount]``, ``f[Feat.avg_item_price]``), never by a
hand-counted position (``tests/unit/test_feature_columns.py`` recomputes each by name).

Shrinkage: a mean at level L is ``(sum_L + K * mean_parent) / (n_L + K)`` with ``K =
SHRINKAGE`` pseudo-observations, so a new cashier starts at the store baseline and moves
towards its own behaviour as history accumulates.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from components.contracts import windows
from components.contracts.feature_columns import (  # noqa: F401  (re-exported: one import for users)
    ANOMALY_FEATURES,
    BEHAVIOURS,
    CASHIER_BLOCK,
    CASHIER_MEAN_START,
    CASHIER_VS_STORE_START,
    FEATURE_NAMES,
    FEATURE_VERSION,
    FOLD_WIDTH,
    GLOBAL_BLOCK,
    ID_COLUMNS,
    LABEL_COLUMNS,
    LANE_SUMS,
    MASKABLE_FIELDS,
    MISSING_INPUT_FEATURES,
    PRIOR_WIDTH,
    PROFILE_FEATURES,
    PROFILE_LEVELS,
    PROFILE_SCHEMA,
    RAW_COPIED_FEATURE_INPUTS,
    RAW_COPIED_FEATURES,
    RAW_INPUTS,
    SIGNED_FEATURES,
    STAT_COLUMNS,
    STAT_LANE,
    STAT_N,
    STAT_SUM,
    STAT_SUMSQ,
    STATS_WIDTH,
    STORE_BLOCK,
    TRANSACTION_FEATURES,
    WINDOW_BLOCK,
    WINDOW_COLUMNS,
    WINDOW_COUNTS,
    WINDOW_FEATURES,
    WINDOW_STATE,
    WINDOW_WIDTH,
    Z_START,
    Behaviour,
    Feat,
    Raw,
)
from components.contracts.schemas import LANE_TYPES, PAYMENT_TYPES

SHRINKAGE = 20.0
"""Pseudo-observations pulling a cashier's (store's) mean towards its store's (global) mean."""
Z_CLIP = 50.0

_PAYMENT_CODE = {name: float(i) for i, name in enumerate(PAYMENT_TYPES)}
_SELF_CHECKOUT = LANE_TYPES.index("self_checkout")
_CASH = _PAYMENT_CODE["cash"]
_NAN = float("nan")

_RAW_COPIED = tuple(
    Raw[name] for name in RAW_INPUTS if name not in ("epoch_s", "is_self_checkout", "payment_code")
)
"""Raw inputs that are a transaction column as is."""
_in_raw_order = operator.itemgetter(*RAW_INPUTS)

# ---------------------------------------------------------------- encoding
#
# Missing is missing: an optional field a client did not send (or a null in a table) is NaN
# in the encoding, never a benign default, so the models see its absence (XGBoost routes NaN
# down each split's learned default branch). Only ``timestamp`` (now) and ``store_id`` (the
# cashier's home store, ``ProfileIndex.store_for``) are filled in.


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
        }
    )
    return row


# ---------------------------------------------------------------- numba kernels

_NB = len(BEHAVIOURS)


@numba.njit(cache=True, nogil=True)
def _behaviours(r: np.ndarray, m: np.ndarray) -> None:
    items = max(r[Raw.item_count], 1.0)
    total = r[Raw.total_amount]
    m[Behaviour.void_count] = r[Raw.void_count]
    m[Behaviour.void_ratio] = r[Raw.void_amount] / (total + r[Raw.void_amount] + 1.0)
    m[Behaviour.no_sale_count] = r[Raw.no_sale_count]
    refund = r[Raw.refund_amount]
    m[Behaviour.has_refund] = refund if math.isnan(refund) else (1.0 if refund > 0.0 else 0.0)
    m[Behaviour.refund_no_receipt] = r[Raw.refund_no_receipt]
    m[Behaviour.discount_ratio] = r[Raw.discount_amount] / (total + r[Raw.discount_amount] + 1.0)
    m[Behaviour.price_override_count] = r[Raw.price_override_count]
    m[Behaviour.abs_weight_variance] = abs(r[Raw.weight_variance])
    m[Behaviour.secs_per_item] = r[Raw.scan_duration_s] / items
    m[Behaviour.post_payment_void] = r[Raw.post_payment_void]


@numba.njit(cache=True, nogil=True)
def _behaviour_matrix(raw: np.ndarray, fold: bool) -> np.ndarray:
    n = raw.shape[0]
    out = np.empty((n, FOLD_WIDTH if fold else STATS_WIDTH))
    m = np.empty(_NB)
    for i in range(n):
        _behaviours(raw[i], m)
        out[i, STAT_N] = 1.0
        for k in range(_NB):
            # A behaviour whose input was not sent adds nothing (see ``behaviour_stats``).
            v = 0.0 if math.isnan(m[k]) else m[k]
            out[i, STAT_SUM + k] = v
            out[i, STAT_SUMSQ + k] = v * v
        windows.lane_sums(raw[i], out[i, STAT_LANE:])
        if fold:
            windows.fold_tail(raw[i], out[i])
    return out


@numba.njit(cache=True, nogil=True)
def _features_row(r: np.ndarray, p: np.ndarray, m: np.ndarray, f: np.ndarray) -> None:
    items = max(r[Raw.item_count], 1.0)
    total = r[Raw.total_amount]
    _behaviours(r, m)
    for j in range(len(RAW_COPIED_FEATURES)):  # features that are a raw input as is
        f[RAW_COPIED_FEATURES[j]] = r[RAW_COPIED_FEATURE_INPUTS[j]]
    f[Feat.log_total_amount] = math.log1p(max(total, 0.0))
    f[Feat.avg_item_price] = total / items
    f[Feat.void_ratio] = m[Behaviour.void_ratio]
    f[Feat.refund_ratio] = r[Raw.refund_amount] / (total + 1.0)
    f[Feat.discount_ratio] = m[Behaviour.discount_ratio]
    f[Feat.abs_weight_variance] = m[Behaviour.abs_weight_variance]
    f[Feat.kg_per_item] = r[Raw.basket_weight_kg] / items
    f[Feat.secs_per_item] = m[Behaviour.secs_per_item]
    payment = r[Raw.payment_code]
    f[Feat.is_cash] = payment if math.isnan(payment) else (1.0 if payment == _CASH else 0.0)
    epoch = r[Raw.epoch_s]
    sec_of_day = epoch - math.floor(epoch / 86400.0) * 86400.0
    hour = sec_of_day / 3600.0
    f[Feat.hour_of_day] = hour
    f[Feat.day_of_week] = (math.floor(epoch / 86400.0) + 3.0) % 7.0
    f[Feat.is_night] = 1.0 if (hour < 6.0 or hour >= 22.0) else 0.0

    c_n = p[CASHIER_BLOCK + STAT_N]
    s_n = p[STORE_BLOCK + STAT_N]
    g_n = p[GLOBAL_BLOCK + STAT_N]
    f[Feat.cashier_log_txn_count] = math.log1p(c_n)
    f[Feat.store_log_txn_count] = math.log1p(s_n)
    for k in range(_NB):
        g_mean = p[GLOBAL_BLOCK + STAT_SUM + k] / max(g_n, 1.0)
        g_e2 = p[GLOBAL_BLOCK + STAT_SUMSQ + k] / max(g_n, 1.0)
        s_mean = (p[STORE_BLOCK + STAT_SUM + k] + SHRINKAGE * g_mean) / (s_n + SHRINKAGE)
        s_e2 = (p[STORE_BLOCK + STAT_SUMSQ + k] + SHRINKAGE * g_e2) / (s_n + SHRINKAGE)
        c_mean = (p[CASHIER_BLOCK + STAT_SUM + k] + SHRINKAGE * s_mean) / (c_n + SHRINKAGE)
        c_e2 = (p[CASHIER_BLOCK + STAT_SUMSQ + k] + SHRINKAGE * s_e2) / (c_n + SHRINKAGE)
        c_var = max(c_e2 - c_mean * c_mean, 0.0)
        z = (m[k] - c_mean) / math.sqrt(c_var + 1e-6)
        f[CASHIER_MEAN_START + k] = c_mean
        f[CASHIER_VS_STORE_START + k] = c_mean - s_mean
        f[Z_START + k] = z if math.isnan(z) else min(max(z, -Z_CLIP), Z_CLIP)
    windows.window_features(r, p, f)


@numba.njit(cache=True, nogil=True)
def _features_batch(raw: np.ndarray, prior: np.ndarray, out: np.ndarray) -> None:
    m = np.empty(_NB)
    for i in range(raw.shape[0]):
        _features_row(raw[i], prior[i], m, out[i])


_NO_WINDOW = np.zeros(WINDOW_WIDTH)
"""A cashier with no history: no shift, empty last hour."""

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


def behaviour_stats(raw: np.ndarray) -> np.ndarray:
    """(n, STATS_WIDTH): what each row adds to its cashier's, store's and global statistics.

    ``ProfileState.advance`` folds exactly these rows; the online profile store
    (``serving.store``) folds one at a time.

    Missing inputs: a row counts in ``n`` but a behaviour computed from a field it did not
    send (NaN) adds 0 to that behaviour's sum and sum of squares. The statistics stay finite
    and batch and online agree; the price is that a cashier whose POS never sends, say,
    ``void_amount`` has its ``void_ratio`` mean diluted towards 0 (no evidence reads as no
    voided value) - the row's own transaction-level features and z-scores are NaN instead.
    """
    return _behaviour_matrix(np.ascontiguousarray(raw, dtype=np.float64), False)


def fold_values(raw: np.ndarray) -> np.ndarray:
    """(n, FOLD_WIDTH): what each row folds into an online store: its ``behaviour_stats``
    row, then its epoch_s and window counts (``windows.fold_window``)."""
    return _behaviour_matrix(np.ascontiguousarray(raw, dtype=np.float64), True)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels now rather than on first use."""
    compute_features(np.zeros((1, len(RAW_INPUTS))), np.zeros((1, PRIOR_WIDTH)))
    behaviour_stats(np.zeros((1, len(RAW_INPUTS))))
    values = fold_values(np.zeros((1, len(RAW_INPUTS))))
    windows.fold_window(np.zeros(WINDOW_WIDTH), values[0])


# ---------------------------------------------------------------- point-in-time profiles


class ProfileState:
    """Running per-cashier, per-store and global statistics over time-ordered transactions."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, np.ndarray]] = {"cashier": {}, "store": {}}
        self._global = np.zeros(STATS_WIDTH)
        self._home_store: dict[str, str] = {}
        self._windows: dict[str, np.ndarray] = {}

    def advance(
        self, raw: np.ndarray, cashier_ids: Sequence[str], store_ids: Sequence[str]
    ) -> np.ndarray:
        """Return each row's prior statistics, then fold the rows into the state.

        Rows must be in time order (and every earlier chunk must already have been
        advanced): row i's prior covers exactly the rows before it.

        Returns:
            (n, PRIOR_WIDTH) float64.
        """
        values = behaviour_stats(raw)
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
            if level == "cashier":  # order-dependent: folded row by row (``windows``)
                state = np.stack([self._windows.get(k, _NO_WINDOW) for k in uniques])
                windows.fold_windows(
                    np.ascontiguousarray(raw, dtype=np.float64),
                    codes,
                    state,
                    prior[:, WINDOW_BLOCK:],
                )
                self._windows.update(zip(uniques, state, strict=True))
        prior[:, GLOBAL_BLOCK:WINDOW_BLOCK] = np.cumsum(values, axis=0) - values + self._global
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
                window = self._windows[key] if level == "cashier" else _NO_WINDOW
                stats.append(np.concatenate([self._stats[level][key], window]))
        rows_level.append("global")
        rows_key.append("*")
        rows_home.append(None)
        stats.append(np.concatenate([self._global, _NO_WINDOW]))
        matrix = np.vstack(stats)
        arrays = [pa.array(rows_level), pa.array(rows_key), pa.array(rows_home, pa.string())]
        arrays += [pa.array(matrix[:, j]) for j in range(matrix.shape[1])]
        return pa.Table.from_arrays(arrays, schema=PROFILE_SCHEMA)


class ProfileIndex:
    """In-memory lookup of prior statistics for requests (serving side of ``ProfileState``)."""

    def __init__(self, table: pa.Table):
        df = table.to_pandas()
        stats = df[list(STAT_COLUMNS)].to_numpy(dtype=np.float64)
        window = df[list(WINDOW_COLUMNS)].to_numpy(dtype=np.float64)
        levels = df["level"].to_numpy()
        keys = df["key"].to_numpy()
        glob = stats[levels == "global"]
        self.global_stats = glob[0] if len(glob) else np.zeros(STATS_WIDTH)
        self.stores = {k: stats[i] for i, k in enumerate(keys) if levels[i] == "store"}
        self.cashiers = {k: stats[i] for i, k in enumerate(keys) if levels[i] == "cashier"}
        self.windows = {k: window[i] for i, k in enumerate(keys) if levels[i] == "cashier"}
        self.home_store = {
            k: h
            for k, h, lv in zip(keys, df["home_store_id"], levels, strict=True)
            if lv == "cashier"
        }
        self._zeros = np.zeros(STATS_WIDTH)
        # Precomputed full prior vectors for the common case: a known cashier in its home store.
        self._home_prior = {
            k: np.concatenate(
                [
                    s,
                    self.stores.get(self.home_store[k], self._zeros),
                    self.global_stats,
                    self.windows[k],
                ]
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
                self.windows.get(cashier_id, _NO_WINDOW),
            ]
        )
