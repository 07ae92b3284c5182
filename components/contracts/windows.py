"""Shift and last-hour windows of a cashier, and the lane's seconds-per-item norm.

ONE definition for the batch features stage (``ProfileState.advance`` folds a chunk with
``fold_windows``), the in-process store (``fold_window``, the same numba code, one row) and the
Redis store (``serving.store.redis_store.FOLD`` repeats ``_step`` and ``_fold`` in Lua, the
only second language; ``tests/integration/test_store_parity.py`` proves they agree).

Rules:

* **Shift.** A cashier's transaction starts a new shift when the cashier has no history or
  more than ``SHIFT_GAP_S`` (4 h) passed since its previous transaction (the world's shifts
  are 8 h, a day apart; breaks are shorter). The shift sums are what the cashier did in the
  current shift *before* this transaction (the row itself is not included, like every
  profile feature).
* **Last hour.** Not an exact sliding window (that needs every timestamp): sums decayed
  exponentially with a one-hour time constant (``DECAY_S``): a transaction ``dt`` seconds ago
  weighs ``exp(-dt / 3600)``. Named ``decay1h_*``. Cheap and exact to fold: the state is the
  decayed sums as of the cashier's last transaction.
* **Order.** A transaction older than the cashier's last one is treated as happening at the
  last one's time (``max(t, last)``): it joins the current shift and decays nothing. Batch
  (time order) and online (arrival order) apply the same rule; the row's own clock features
  (hour of day, ...) still use its own timestamp.
* **Retries** are never folded twice (the stores' dedupe, as for every statistic).
* **Lane norm.** The store's seconds per item on the row's lane type (staffed or self
  checkout; additive sums in the statistics rows, ``LANE_SUMS``), shrunk towards the global
  one for that lane type, itself shrunk towards a typical value: ``lane_secs_per_item``. The
  row's and the shift's seconds per item are compared to it as ratios (``*_vs_lane``); the
  shift's and last hour's seconds per item are shrunk towards it by ``SPI_SHRINK_ITEMS``
  pseudo-items, so a shift that just began reads as ordinary.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from components.contracts.feature_columns import (
    FOLD_COUNTS,
    FOLD_EPOCH,
    FOLD_WIDTH,
    GLOBAL_BLOCK,
    STAT_LANE,
    STORE_BLOCK,
    WINDOW_BLOCK,
    WINDOW_COUNTS,
    WINDOW_WIDTH,
    Feat,
    Lane,
    Raw,
    Win,
    WinCount,
)

SHIFT_GAP_S = 4 * 3600.0
"""A gap longer than this since the cashier's previous transaction starts a new shift."""
DECAY_S = 3600.0
"""Time constant of the ``decay1h_*`` sums."""
SPI_SHRINK_ITEMS = 10.0
"""Pseudo-items pulling a window's seconds per item towards the lane norm."""
TYPICAL_SECS_PER_ITEM = 3.5
"""Seconds per item the global lane norms start from (before any history)."""
LANE_SHRINK_ITEMS = 200.0
"""Pseudo-items pulling a store's lane norm towards the global one (and that towards typical)."""

_NC = len(WINDOW_COUNTS)
_SHIFT = int(Win.shift_txn)
_DECAY = int(Win.decay1h_txn)


@numba.njit(cache=True, nogil=True)
def window_counts(r: np.ndarray, x: np.ndarray) -> None:
    """What the transaction ``r`` (a raw row) adds to its cashier's windows (WINDOW_COUNTS)."""
    x[WinCount.txn] = 1.0
    x[WinCount.void_count] = r[Raw.void_count]
    x[WinCount.no_sale_count] = r[Raw.no_sale_count]
    x[WinCount.refund] = 1.0 if r[Raw.refund_amount] > 0.0 else 0.0  # not sent: adds 0
    scan = r[Raw.scan_duration_s]
    timed = not math.isnan(scan)  # not sent: adds neither items nor seconds per item
    x[WinCount.items] = max(r[Raw.item_count], 1.0) if timed else 0.0
    x[WinCount.scan_s] = scan if timed else 0.0


@numba.njit(cache=True, nogil=True)
def lane_sums(r: np.ndarray, out: np.ndarray) -> None:
    """The row's items and scan seconds in its lane type's two ``LANE_SUMS`` (zeros in the other)."""
    scan = r[Raw.scan_duration_s]
    lane = r[Raw.is_self_checkout]
    known = not (math.isnan(scan) or math.isnan(lane))  # not sent: adds nothing to the norm
    items = max(r[Raw.item_count], 1.0) if known else 0.0
    scan = scan if known else 0.0
    sco = lane > 0.5
    out[Lane.staffed_items] = 0.0 if sco else items
    out[Lane.staffed_scan_s] = 0.0 if sco else scan
    out[Lane.self_checkout_items] = items if sco else 0.0
    out[Lane.self_checkout_scan_s] = scan if sco else 0.0


@numba.njit(cache=True, nogil=True)
def _step(w: np.ndarray, t: float) -> tuple[float, bool, float]:
    """(effective time, new shift?, decay factor) of a transaction at ``t`` on state ``w``."""
    last = w[Win.last_epoch_s]
    te = max(t, last)
    gap = te - last
    new_shift = w[_SHIFT + WinCount.txn] == 0.0 or gap > SHIFT_GAP_S
    return te, new_shift, math.exp(-gap / DECAY_S)


@numba.njit(cache=True, nogil=True)
def _fold(w: np.ndarray, t: float, x: np.ndarray, out: np.ndarray) -> None:
    te, new_shift, d = _step(w, t)
    out[Win.last_epoch_s] = te
    out[Win.shift_start_s] = te if new_shift else w[Win.shift_start_s]
    for k in range(_NC):
        shift = 0.0 if new_shift else w[_SHIFT + k]
        out[_SHIFT + k] = shift + x[k]
        out[_DECAY + k] = w[_DECAY + k] * d + x[k]


@numba.njit(cache=True, nogil=True)
def fold_window(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A cashier's new window state after the transaction whose fold vector is ``values``
    (FOLD_WIDTH: statistics row, epoch_s, window counts). The stores' one-row fold."""
    if values.shape[0] != FOLD_WIDTH or w.shape[0] != WINDOW_WIDTH:
        raise ValueError("fold_window: a FOLD_WIDTH fold vector and a WINDOW_WIDTH state")
    out = np.empty(WINDOW_WIDTH)
    _fold(w, values[FOLD_EPOCH], values[FOLD_COUNTS : FOLD_COUNTS + _NC], out)
    return out


@numba.njit(cache=True, nogil=True)
def fold_windows(raw: np.ndarray, codes: np.ndarray, state: np.ndarray, prior: np.ndarray) -> None:
    """Batch fold over time-ordered rows: ``prior[i]`` = the state of row i's cashier
    (``codes[i]``, a row of ``state``) before row i; ``state`` ends as the final states."""
    x = np.empty(_NC)
    out = np.empty(WINDOW_WIDTH)
    for i in range(raw.shape[0]):
        w = state[codes[i]]
        prior[i, :] = w
        window_counts(raw[i], x)
        _fold(w, raw[i, Raw.epoch_s], x, out)
        w[:] = out


@numba.njit(cache=True, nogil=True)
def fold_tail(r: np.ndarray, values: np.ndarray) -> None:
    """Fill the window part of a fold vector (FOLD_WIDTH) from the raw row ``r``: its
    epoch_s, then its window counts (the statistics part is ``features``')."""
    values[FOLD_EPOCH] = r[Raw.epoch_s]
    window_counts(r, values[FOLD_COUNTS : FOLD_COUNTS + _NC])


@numba.njit(cache=True, nogil=True)
def _lane_norm(p: np.ndarray, sco: bool, typical: float) -> float:
    items = Lane.self_checkout_items if sco else Lane.staffed_items
    scan = Lane.self_checkout_scan_s if sco else Lane.staffed_scan_s
    g_items = p[GLOBAL_BLOCK + STAT_LANE + items]
    g = (p[GLOBAL_BLOCK + STAT_LANE + scan] + LANE_SHRINK_ITEMS * typical) / (
        g_items + LANE_SHRINK_ITEMS
    )
    s_items = p[STORE_BLOCK + STAT_LANE + items]
    return (p[STORE_BLOCK + STAT_LANE + scan] + LANE_SHRINK_ITEMS * g) / (
        s_items + LANE_SHRINK_ITEMS
    )


@numba.njit(cache=True, nogil=True)
def window_features(r: np.ndarray, p: np.ndarray, f: np.ndarray) -> None:
    """Fill the ``WINDOW_FEATURES`` of row ``r`` from its prior ``p`` (the cashier's window
    state before the row, moved to the row's time by the same ``_step`` the fold uses)."""
    w = p[WINDOW_BLOCK : WINDOW_BLOCK + WINDOW_WIDTH]
    te, new_shift, d = _step(w, r[Raw.epoch_s])
    lane = r[Raw.is_self_checkout]
    # Lane type not sent: the lane norm and everything compared to it are missing.
    norm = math.nan if math.isnan(lane) else _lane_norm(p, lane > 0.5, TYPICAL_SECS_PER_ITEM)
    s = 0.0 if new_shift else 1.0
    f[Feat.shift_txn_count] = s * w[_SHIFT + WinCount.txn]
    f[Feat.shift_void_count] = s * w[_SHIFT + WinCount.void_count]
    f[Feat.shift_no_sale_count] = s * w[_SHIFT + WinCount.no_sale_count]
    f[Feat.shift_refund_count] = s * w[_SHIFT + WinCount.refund]
    shift_spi = (s * w[_SHIFT + WinCount.scan_s] + SPI_SHRINK_ITEMS * norm) / (
        s * w[_SHIFT + WinCount.items] + SPI_SHRINK_ITEMS
    )
    f[Feat.shift_secs_per_item] = shift_spi
    f[Feat.shift_hours] = 0.0 if new_shift else (te - w[Win.shift_start_s]) / 3600.0
    f[Feat.decay1h_txn_count] = w[_DECAY + WinCount.txn] * d
    f[Feat.decay1h_void_count] = w[_DECAY + WinCount.void_count] * d
    f[Feat.decay1h_no_sale_count] = w[_DECAY + WinCount.no_sale_count] * d
    f[Feat.decay1h_refund_count] = w[_DECAY + WinCount.refund] * d
    f[Feat.decay1h_secs_per_item] = (w[_DECAY + WinCount.scan_s] * d + SPI_SHRINK_ITEMS * norm) / (
        w[_DECAY + WinCount.items] * d + SPI_SHRINK_ITEMS
    )
    f[Feat.lane_secs_per_item] = norm
    f[Feat.secs_per_item_vs_lane] = r[Raw.scan_duration_s] / max(r[Raw.item_count], 1.0) / norm
    f[Feat.shift_secs_per_item_vs_lane] = shift_spi / norm
