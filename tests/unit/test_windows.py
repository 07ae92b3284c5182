"""Shift, last-hour and lane-norm features (``components.contracts.windows``): checked
against a direct, non-incremental reference written from the stated rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from components.contracts import features as F
from components.contracts import windows as W
from serving.store import InProcessStore
from tests.unit.test_features import make_tx

H = 3600.0


def reference(tx: pd.DataFrame) -> pd.DataFrame:
    """Per row, from the rules alone: the cashier's earlier rows in the current shift (a gap
    over SHIFT_GAP_S starts one) and sum(x_j * exp(-(t_i - t_j) / DECAY_S)) over all earlier
    rows (time order: no late arrivals)."""
    t = F.raw_matrix(tx)[:, F.Raw.epoch_s]
    cashier = tx["cashier_id"].to_numpy()
    voids, refunds = tx["void_count"].to_numpy(), (tx["refund_amount"] > 0).to_numpy()
    no_sales = tx["no_sale_count"].to_numpy()
    out = []
    for i in range(len(tx)):
        mine = [j for j in range(i) if cashier[j] == cashier[i]]
        shift: list[int] = []
        for j in mine:
            shift = [j] if not shift or t[j] - t[shift[-1]] > W.SHIFT_GAP_S else [*shift, j]
        if shift and t[i] - t[shift[-1]] > W.SHIFT_GAP_S:
            shift = []
        weight = np.exp(-(t[i] - t[mine]) / W.DECAY_S)
        out.append(
            {
                "shift_txn_count": len(shift),
                "shift_void_count": voids[shift].sum(),
                "shift_no_sale_count": no_sales[shift].sum(),
                "shift_refund_count": refunds[shift].sum(),
                "shift_hours": (t[i] - t[shift[0]]) / H if shift else 0.0,
                "decay1h_txn_count": weight.sum(),
                "decay1h_void_count": (weight * voids[mine]).sum(),
                "decay1h_refund_count": (weight * refunds[mine]).sum(),
            }
        )
    return pd.DataFrame(out)


def batch(tx: pd.DataFrame) -> pd.DataFrame:
    raw = F.raw_matrix(tx)
    prior = F.ProfileState().advance(raw, tx["cashier_id"].to_numpy(), tx["store_id"].to_numpy())
    return pd.DataFrame(F.compute_features(raw, prior), columns=list(F.FEATURE_NAMES))


def test_shift_and_last_hour_match_the_direct_definition():
    tx = make_tx(400, seed=3, cashiers=4)  # ~100 rows per cashier over 5 days: many shifts
    got, want = batch(tx), reference(tx)
    for name in want.columns:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert (want["shift_txn_count"] == 0).sum() > 2 * 4  # shifts really restart (16 here)
    assert want["shift_txn_count"].max() > 5


def _tx(minutes: float, **kw) -> dict:
    base = make_tx(1).iloc[0].to_dict()
    stamp = pd.Timestamp("2026-01-05 08:00") + pd.Timedelta(minutes=minutes)
    return base | {"timestamp": stamp, "refund_amount": 0.0} | kw


def _fold_in_arrival_order(rows: list[dict]) -> pd.DataFrame:
    """The in-process store over rows in the order given, features computed per request."""
    store = InProcessStore()
    out = []
    for i, row in enumerate(rows):
        raw = F.raw_row(row | {"timestamp": row["timestamp"].isoformat()})
        prior = store.fold(row["cashier_id"], row["store_id"], f"t{i}", F.fold_values(raw)[0])
        out.append(F.compute_features(raw, prior)[0])
    return pd.DataFrame(out, columns=list(F.FEATURE_NAMES))


def test_late_arrival_joins_the_current_shift_at_the_last_time_in_batch_and_online():
    rows = [
        _tx(0, void_count=2),
        _tx(60, void_count=1),
        _tx(30, void_count=5),  # late: older than the cashier's last transaction
        _tx(90, void_count=0),
    ]
    online = _fold_in_arrival_order(rows)
    late, after = online.iloc[2], online.iloc[3]
    assert late["shift_txn_count"] == 2 and late["shift_void_count"] == 3
    assert late["shift_hours"] == 1.0  # at the last one's time, not its own
    assert late["decay1h_txn_count"] == pytest.approx(math.exp(-1) + 1)  # nothing decayed
    assert after["shift_void_count"] == 8
    d = math.exp(-0.5)
    assert after["decay1h_void_count"] == pytest.approx((2 * math.exp(-1) + 1 + 5) * d)
    # The batch stage, given the same order, applies the same rule with the same code.
    arrival = pd.DataFrame(rows)
    windowed = list(F.WINDOW_FEATURES)  # (profile sums round differently: cumsum - value)
    np.testing.assert_array_equal(batch(arrival)[windowed], online[windowed])


def test_gap_over_four_hours_starts_a_new_shift():
    rows = [_tx(0), _tx(60), _tx(60 + 4 * 60 + 1), _tx(60 + 4 * 60 + 2)]
    got = _fold_in_arrival_order(rows)
    assert got["shift_txn_count"].tolist() == [0, 1, 0, 1]
    assert got["shift_hours"].iloc[3] == pytest.approx(1 / 60)


def test_lane_norm_is_the_stores_lane_type_shrunk_to_global_then_typical():
    staffed = [_tx(i, item_count=10, scan_duration_s=80.0, lane_type="staffed") for i in range(5)]
    probe = _tx(10, item_count=4, scan_duration_s=24.0, lane_type="self_checkout")
    got = _fold_in_arrival_order([*staffed, probe])
    k, typical = W.LANE_SHRINK_ITEMS, W.TYPICAL_SECS_PER_ITEM
    # Row 4 sees 4 staffed rows (40 items, 320 s) in its store, and they are all the world.
    global_staffed = (320.0 + k * typical) / (40 + k)
    assert got["lane_secs_per_item"].iloc[4] == pytest.approx(
        (320.0 + k * global_staffed) / (40 + k)
    )
    assert got["secs_per_item_vs_lane"].iloc[4] == pytest.approx(
        8.0 / got["lane_secs_per_item"].iloc[4]
    )
    # The SCO probe: no SCO history anywhere, so its norm is the typical value.
    assert got["lane_secs_per_item"].iloc[5] == pytest.approx(typical)
    assert got["secs_per_item_vs_lane"].iloc[5] == pytest.approx(6.0 / typical)
    # The shift's own seconds per item (8 per item over 50 items), shrunk by 10 pseudo-items.
    spi = (400.0 + W.SPI_SHRINK_ITEMS * typical) / (50 + W.SPI_SHRINK_ITEMS)
    assert got["shift_secs_per_item"].iloc[5] == pytest.approx(spi)
    assert got["shift_secs_per_item_vs_lane"].iloc[5] == pytest.approx(spi / typical)


def test_fold_window_rejects_a_statistics_row_for_a_fold_vector():
    with pytest.raises(ValueError, match="FOLD_WIDTH"):
        W.fold_window(np.zeros(F.WINDOW_WIDTH), np.zeros(F.STATS_WIDTH))
