"""Feature columns by name: the raw encoding, behaviour metrics, model inputs and profiles.

Declarations only (the math is in ``components.contracts.features``, which re-exports these
names). Every position a kernel uses is derived here from the tuples by name (``Raw``,
``Behaviour``, ``Feat`` and the block offsets), so no index is aligned by hand.
"""

from __future__ import annotations

from enum import IntEnum

import pyarrow as pa

FEATURE_VERSION = 2
"""Bumped whenever a feature's definition changes; stored in bundles and checked by serving."""

ID_COLUMNS = ("transaction_id", "timestamp", "store_id", "cashier_id")
LABEL_COLUMNS = ("is_fraud", "fraud_type")

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

LANE_SUMS = (
    "staffed_items",
    "staffed_scan_s",
    "self_checkout_items",
    "self_checkout_scan_s",
)
"""Items and scan seconds per lane type: the lane's seconds-per-item norm (store x lane type)."""

PROFILE_LEVELS = ("cashier", "store", "global")
STATS_WIDTH = 1 + 2 * len(BEHAVIOURS) + len(LANE_SUMS)
"""Per level: n, then sum of each behaviour, sum of squares of each behaviour, lane sums.
All additive: a level's statistics are the sum of its transactions' rows, in any order."""

WINDOW_COUNTS = ("txn", "void_count", "no_sale_count", "refund", "items", "scan_s")
"""What one transaction adds to its cashier's shift and last-hour windows (``windows``)."""
WINDOW_STATE = (
    "last_epoch_s",
    "shift_start_s",
    *(f"shift_{c}" for c in WINDOW_COUNTS),
    *(f"decay1h_{c}" for c in WINDOW_COUNTS),
)
"""Per cashier: time of its last transaction, start of its current shift, the shift's sums,
and the sums decayed with a one-hour time constant (as of ``last_epoch_s``). Order-dependent,
so folded by ``windows.fold_window``, never summed."""
WINDOW_WIDTH = len(WINDOW_STATE)
FOLD_WIDTH = STATS_WIDTH + 1 + len(WINDOW_COUNTS)
"""What one transaction folds into a store: its statistics row, its epoch_s, its window counts."""
PRIOR_WIDTH = STATS_WIDTH * len(PROFILE_LEVELS) + WINDOW_WIDTH
"""A prior vector: cashier, store and global statistics, then the cashier's window state."""


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
WINDOW_FEATURES = (
    "shift_txn_count",
    "shift_void_count",
    "shift_no_sale_count",
    "shift_refund_count",
    "shift_secs_per_item",
    "shift_hours",
    "decay1h_txn_count",
    "decay1h_void_count",
    "decay1h_no_sale_count",
    "decay1h_refund_count",
    "decay1h_secs_per_item",
    "lane_secs_per_item",
    "secs_per_item_vs_lane",
    "shift_secs_per_item_vs_lane",
)
"""The cashier's current shift and last hour (before this transaction) and the lane's
seconds-per-item norm (``components.contracts.windows``)."""
FEATURE_NAMES = TRANSACTION_FEATURES + PROFILE_FEATURES + WINDOW_FEATURES
"""Model input columns, in order."""
SIGNED_FEATURES = (
    "weight_variance",
    *(f"cashier_vs_store_{m}" for m in BEHAVIOURS),
    *(f"z_{m}" for m in BEHAVIOURS),
)
"""Features that may be negative; every other feature is >= 0 by construction (counts,
amounts, ratios, clock values, log counts, means of non-negative behaviours)."""

MISSING_INPUT_FEATURES: dict[str, tuple[str, ...]] = {
    "lane_type": (
        "is_self_checkout",
        "lane_secs_per_item",
        "secs_per_item_vs_lane",
        "shift_secs_per_item",
        "shift_secs_per_item_vs_lane",
        "decay1h_secs_per_item",
    ),
    "void_amount": ("void_amount", "void_ratio", "z_void_ratio"),
    "post_payment_void": ("post_payment_void", "z_post_payment_void"),
    "refund_amount": ("refund_amount", "refund_ratio", "z_has_refund"),
    "refund_no_receipt": ("refund_no_receipt", "z_refund_no_receipt"),
    "discount_amount": ("discount_amount", "discount_ratio", "z_discount_ratio"),
    "price_override_count": ("price_override_count", "z_price_override_count"),
    "payment_type": ("payment_code", "is_cash"),
    "basket_weight_kg": ("basket_weight_kg", "kg_per_item"),
    "scan_duration_s": (
        "scan_duration_s",
        "secs_per_item",
        "z_secs_per_item",
        "secs_per_item_vs_lane",
    ),
}
"""Optional transaction field -> the features that are NaN (missing) when a client did not
send it: the field's own column, what is derived from it, and the row's z-score of a
behaviour computed from it. Every other feature is defined whatever the client sends (the
seed brief's seven fields are required; ``timestamp`` defaults to now, ``store_id`` to the
home store). The profile means (``cashier_mean_*``, ``cashier_vs_store_*``) stay defined:
they summarise history (``features.behaviour_stats`` states the rule for missing inputs).
``tests/unit/test_features_missing.py`` proves the map equals what the kernel does."""
MASKABLE_FIELDS = tuple(MISSING_INPUT_FEATURES)
"""Optional fields a client may leave out (the keys of ``MISSING_INPUT_FEATURES``)."""

ANOMALY_FEATURES = (
    "void_ratio",
    "refund_ratio",
    "discount_ratio",
    "abs_weight_variance",
    "kg_per_item",
    "secs_per_item",
    "no_sale_count",
    "price_override_count",
    "post_payment_void",
    "refund_no_receipt",
)
"""The isolation forest's inputs, by a fixed domain rule that looks at no label: every
per-transaction exception signal a loss-prevention exception report reads, in scale-free form
(a share of the basket: ``void_ratio``, ``refund_ratio``, ``discount_ratio``; a per-item
rate or mismatch: ``kg_per_item``, ``secs_per_item``, ``abs_weight_variance``; a count of
exception events: ``no_sale_count``, ``price_override_count``, ``post_payment_void``,
``refund_no_receipt``), and no cashier-history column (a thief's history is the norm the
forest would learn). Few columns because an isolation forest splits on a random column at
each node: an anomaly in one of 73 columns is rarely isolated early. A subset of
``FEATURE_NAMES``; the exported forest still indexes the full feature vector. The rule is
checked by ``tests/unit/test_channels.py`` (no type's labels change the forest)."""

# Named positions: the kernels index by name (``r[Raw.item_count]``, ``f[Feat.avg_item_price]``),
# so reordering or inserting a column cannot misalign them.
Raw = IntEnum("Raw", RAW_INPUTS, start=0)
"""Column of ``raw_matrix`` / ``raw_row`` by name."""
Behaviour = IntEnum("Behaviour", BEHAVIOURS, start=0)
"""Position of a behaviour metric (in ``_behaviours`` and in each statistics block)."""
Feat = IntEnum("Feat", FEATURE_NAMES, start=0)
"""Column of ``compute_features``'s output by name."""
STAT_N, STAT_SUM, STAT_SUMSQ, STAT_LANE = 0, 1, 1 + len(BEHAVIOURS), 1 + 2 * len(BEHAVIOURS)
"""Offsets inside one level's statistics block: n, sums, sums of squares, lane sums."""
Lane = IntEnum("Lane", LANE_SUMS, start=0)
"""Position of a lane sum (from ``STAT_LANE``)."""
CASHIER_BLOCK, STORE_BLOCK, GLOBAL_BLOCK = (
    STATS_WIDTH * PROFILE_LEVELS.index(lv) for lv in PROFILE_LEVELS
)
"""Start of each level's statistics block in a prior vector."""
WINDOW_BLOCK = STATS_WIDTH * len(PROFILE_LEVELS)
"""Start of the cashier's window state in a prior vector."""
Win = IntEnum("Win", WINDOW_STATE, start=0)
"""Position inside a window state by name."""
WinCount = IntEnum("WinCount", WINDOW_COUNTS, start=0)
"""Position of a window count (from ``Win.shift_txn`` and from ``Win.decay1h_txn``)."""
FOLD_EPOCH = STATS_WIDTH
FOLD_COUNTS = STATS_WIDTH + 1
"""Offsets inside a fold vector (``FOLD_WIDTH``): epoch_s, then the window counts."""
CASHIER_MEAN_START = FEATURE_NAMES.index(f"cashier_mean_{BEHAVIOURS[0]}")
CASHIER_VS_STORE_START = FEATURE_NAMES.index(f"cashier_vs_store_{BEHAVIOURS[0]}")
Z_START = FEATURE_NAMES.index(f"z_{BEHAVIOURS[0]}")
"""Start of the per-behaviour feature blocks (behaviour k is at start + k)."""
RAW_COPIED_FEATURES = tuple(int(Feat[n]) for n in TRANSACTION_FEATURES if n in RAW_INPUTS)
RAW_COPIED_FEATURE_INPUTS = tuple(int(Raw[n]) for n in TRANSACTION_FEATURES if n in RAW_INPUTS)
"""Features named like a raw input are that input as is: output and input positions."""
PROFILE_SCHEMA = pa.schema(
    [
        pa.field("level", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("home_store_id", pa.string()),
        pa.field("n", pa.float64(), nullable=False),
        *(pa.field(f"sum_{m}", pa.float64(), nullable=False) for m in BEHAVIOURS),
        *(pa.field(f"sumsq_{m}", pa.float64(), nullable=False) for m in BEHAVIOURS),
        *(pa.field(f"lane_{m}", pa.float64(), nullable=False) for m in LANE_SUMS),
        *(pa.field(f"win_{m}", pa.float64(), nullable=False) for m in WINDOW_STATE),
    ]
)
"""Final point-in-time statistics: one row per cashier, per store and one global row (the
window state is the cashier's; zeros on store and global rows)."""
STAT_COLUMNS = PROFILE_SCHEMA.names[3 : 3 + STATS_WIDTH]
WINDOW_COLUMNS = PROFILE_SCHEMA.names[3 + STATS_WIDTH :]
