"""Feature columns by name: every output column holds the quantity its name says.

The kernel indexes raw inputs, behaviours, prior statistics and outputs by name; these tests
recompute each feature independently in plain Python, keyed by the feature's name, so a
column written to the wrong position (or not at all) fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from components.contracts import features as F
from components.contracts.feature_columns import Behaviour, Feat, Lane, Raw, Win, WinCount

TX = {
    "transaction_id": "T1",
    "timestamp": pd.Timestamp("2026-01-07 23:30:15"),  # a Wednesday, at night
    "store_id": "S01",
    "lane_id": "L1",
    "lane_type": "self_checkout",
    "cashier_id": "C01",
    "item_count": 8,
    "total_amount": 64.0,
    "void_count": 2,
    "void_amount": 12.5,
    "post_payment_void": True,
    "no_sale_count": 3,
    "refund_amount": 20.0,
    "refund_no_receipt": True,
    "discount_amount": 5.0,
    "price_override_count": 4,
    "payment_type": "cash",
    "weight_variance": -0.75,
    "basket_weight_kg": 6.0,
    "scan_duration_s": 40.0,
}


def expected_transaction_features(t: dict) -> dict[str, float]:
    """Each transaction-level feature, from its definition (independent of the kernel)."""
    items = max(t["item_count"], 1)
    total = t["total_amount"]
    return {
        "item_count": t["item_count"],
        "total_amount": total,
        "log_total_amount": math.log1p(total),
        "avg_item_price": total / items,
        "void_count": t["void_count"],
        "void_amount": t["void_amount"],
        "void_ratio": t["void_amount"] / (total + t["void_amount"] + 1),
        "post_payment_void": float(t["post_payment_void"]),
        "no_sale_count": t["no_sale_count"],
        "refund_amount": t["refund_amount"],
        "refund_ratio": t["refund_amount"] / (total + 1),
        "refund_no_receipt": float(t["refund_no_receipt"]),
        "discount_amount": t["discount_amount"],
        "discount_ratio": t["discount_amount"] / (total + t["discount_amount"] + 1),
        "price_override_count": t["price_override_count"],
        "weight_variance": t["weight_variance"],
        "abs_weight_variance": abs(t["weight_variance"]),
        "basket_weight_kg": t["basket_weight_kg"],
        "kg_per_item": t["basket_weight_kg"] / items,
        "scan_duration_s": t["scan_duration_s"],
        "secs_per_item": t["scan_duration_s"] / items,
        "is_self_checkout": float(t["lane_type"] == "self_checkout"),
        "is_cash": float(t["payment_type"] == "cash"),
        "payment_code": float(F.PAYMENT_TYPES.index(t["payment_type"])),
        "hour_of_day": t["timestamp"].hour
        + t["timestamp"].minute / 60
        + t["timestamp"].second / 3600,
        "day_of_week": float(t["timestamp"].dayofweek),
        "is_night": 1.0,
    }


def expected_behaviours(t: dict) -> dict[str, float]:
    feats = expected_transaction_features(t)
    return {
        "void_count": t["void_count"],
        "void_ratio": feats["void_ratio"],
        "no_sale_count": t["no_sale_count"],
        "has_refund": float(t["refund_amount"] > 0),
        "refund_no_receipt": float(t["refund_no_receipt"]),
        "discount_ratio": feats["discount_ratio"],
        "price_override_count": t["price_override_count"],
        "abs_weight_variance": abs(t["weight_variance"]),
        "secs_per_item": feats["secs_per_item"],
        "post_payment_void": float(t["post_payment_void"]),
    }


def test_named_positions_follow_the_tuples():
    assert [m.name for m in Raw] == list(F.RAW_INPUTS)
    assert [m.name for m in Behaviour] == list(F.BEHAVIOURS)
    assert [m.name for m in Feat] == list(F.FEATURE_NAMES)
    assert [m.value for m in Feat] == list(range(len(F.FEATURE_NAMES)))
    assert set(expected_behaviours(TX)) == set(F.BEHAVIOURS)
    assert set(expected_transaction_features(TX)) == set(F.TRANSACTION_FEATURES)
    assert [m.name for m in Win] == list(F.WINDOW_STATE)
    assert [m.name for m in WinCount] == list(F.WINDOW_COUNTS)
    assert Win.decay1h_txn - Win.shift_txn == len(F.WINDOW_COUNTS)
    assert [m.name for m in Lane] == list(F.LANE_SUMS)
    assert list(F.STAT_COLUMNS[F.STAT_LANE :]) == [f"lane_{m}" for m in F.LANE_SUMS]
    assert list(F.WINDOW_COLUMNS) == [f"win_{m}" for m in F.WINDOW_STATE]
    assert F.PRIOR_WIDTH == F.WINDOW_BLOCK + F.WINDOW_WIDTH


@pytest.mark.parametrize("flip", [False, True])
def test_raw_encoding_is_by_name(flip):
    # Flipping the flags one at a time gives every raw input a value no neighbour shares.
    tx = {**TX, "post_payment_void": not flip, "refund_no_receipt": flip}
    tx["lane_type"] = "staffed" if flip else "self_checkout"
    raw = F.raw_matrix(pd.DataFrame([tx]))
    for name in F.RAW_INPUTS:
        if name in tx:
            assert raw[0, Raw[name]] == pytest.approx(float(tx[name])), name
    assert raw[0, Raw.is_self_checkout] == (0.0 if flip else 1.0)
    assert raw[0, Raw.payment_code] == F.PAYMENT_TYPES.index("cash")
    request = {**tx, "timestamp": tx["timestamp"].isoformat()}
    np.testing.assert_array_equal(F.raw_row(request), raw)


def test_every_feature_column_holds_what_its_name_says():
    # History: three earlier transactions of the same cashier, so the profile part is non-trivial.
    history = pd.DataFrame(
        [
            {
                **TX,
                "transaction_id": f"H{i}",
                "timestamp": pd.Timestamp(f"2026-01-0{i + 1} 12:00"),
                "void_count": i,
                "no_sale_count": 0,
                "weight_variance": 0.1 * i,
            }
            for i in range(3)
        ]
    )
    state = F.ProfileState()
    state.advance(F.raw_matrix(history), history["cashier_id"], history["store_id"])
    profiles = state.to_table().to_pandas().set_index("level")
    index = F.ProfileIndex(state.to_table())

    out = np.full((1, len(F.FEATURE_NAMES)), np.nan)
    F.compute_features(F.raw_matrix(pd.DataFrame([TX])), index.prior_for("C01", "S01"), out=out)
    got = dict(zip(F.FEATURE_NAMES, out[0], strict=True))
    assert np.isfinite(out).all(), "a feature column was not written"

    for name, value in expected_transaction_features(TX).items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name

    k = F.SHRINKAGE
    stats = {lv: profiles.loc[lv] for lv in ("cashier", "store", "global")}
    assert got["cashier_log_txn_count"] == pytest.approx(math.log1p(stats["cashier"]["n"]))
    assert got["store_log_txn_count"] == pytest.approx(math.log1p(stats["store"]["n"]))

    def shrunk(level: str, column: str, parent: float) -> float:
        return (stats[level][column] + k * parent) / (stats[level]["n"] + k)

    for m, value in expected_behaviours(TX).items():
        g_mean = stats["global"][f"sum_{m}"] / stats["global"]["n"]
        g_e2 = stats["global"][f"sumsq_{m}"] / stats["global"]["n"]
        s_mean, s_e2 = shrunk("store", f"sum_{m}", g_mean), shrunk("store", f"sumsq_{m}", g_e2)
        c_mean = shrunk("cashier", f"sum_{m}", s_mean)
        c_e2 = shrunk("cashier", f"sumsq_{m}", s_e2)
        z = (value - c_mean) / math.sqrt(max(c_e2 - c_mean**2, 0.0) + 1e-6)
        assert got[f"cashier_mean_{m}"] == pytest.approx(c_mean, rel=1e-9, abs=1e-12), m
        assert got[f"cashier_vs_store_{m}"] == pytest.approx(c_mean - s_mean, abs=1e-9), m
        assert got[f"z_{m}"] == pytest.approx(max(min(z, F.Z_CLIP), -F.Z_CLIP), rel=1e-9), m
