"""The time-split contract shared by split (writes the boundaries) and features (reads them)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from components.contracts.layout import (
    DATA_STAGES,
    HISTORIC_SUBSETS,
    SUBSETS,
    TimeBoundaries,
    assign_subset,
    time_boundaries,
)
from components.contracts.schemas import InputError

REPO = Path(__file__).resolve().parents[2]
B = time_boundaries(
    datetime(2026, 1, 1, 8), datetime(2026, 1, 10, 20), live_days=2, valid_days=2, test_days=2
)


def test_what_split_writes_features_reads():
    assert TimeBoundaries.from_json(B.to_json(), source="x") == B
    historic = {k: v for k, v in B.to_json().items() if k != "live_end"}
    assert TimeBoundaries.from_json(historic) == TimeBoundaries(
        B.train_end, B.valid_end, B.historic_end
    )


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "expected a JSON object"),
        ({"train_end": "2026-01-03T00:00:00", "valid_end": "2026-01-05T00:00:00"}, "historic_end"),
        ({**B.to_json(), "valid_end": "yesterday"}, "'valid_end' is not an ISO timestamp"),
        ({**B.to_json(), "train_end": "2026-02-01T00:00:00"}, "out of order"),
        ({**B.to_json(), "live_end": "2026-01-02T00:00:00"}, "out of order"),
    ],
)
def test_bad_time_splits_are_input_errors_naming_the_source(obj, message):
    with pytest.raises(InputError, match=message) as info:
        TimeBoundaries.from_json(obj, source="splits.json")
    assert str(info.value).startswith("splits.json: ")


def test_arrow_and_pandas_timestamps_get_the_same_subsets():
    edges = [B.train_end, B.valid_end, B.historic_end]
    ts = [e + d for e in edges for d in (pd.Timedelta(-1, "ns"), pd.Timedelta(0))]
    series = pd.Series(pd.to_datetime(ts))  # nanoseconds: one tick before each boundary
    assert assign_subset(series, B).tolist() == [
        "train", "valid", "valid", "test", "test", "live",
    ]  # fmt: skip
    micro = pa.array([t.to_pydatetime(warn=False) for t in series], pa.timestamp("us"))
    assert assign_subset(micro, B).tolist() == assign_subset(series, B).tolist()
    assert set(HISTORIC_SUBSETS) == set(SUBSETS) - {"live"}


def test_historic_rows_only_rejects_the_live_period():
    ts = np.array([B.train_end, B.historic_end], dtype="datetime64[us]")
    assert assign_subset(ts[:1], B, historic_only=True).tolist() == ["valid"]
    with pytest.raises(InputError, match="1 row\\(s\\) at or after historic_end"):
        assign_subset(ts, B, historic_only=True)


@pytest.mark.parametrize("stage", sorted(DATA_STAGES))
def test_component_specs_use_the_artifact_names(stage):
    spec = yaml.safe_load((REPO / "components" / stage / "component.yaml").read_text())
    root = spec["root"]
    inputs = set(root.get("inputDefinitions", {}).get("artifacts", {}))
    outputs = set(root["outputDefinitions"]["artifacts"])
    assert (inputs, outputs) == tuple(set(names) for names in DATA_STAGES[stage])


# ------------------------------------------------------------ cashier-disjoint holdout


def _cashiers(n: int = 200, dishonest: int = 20):
    ids = np.array([f"C{i:04d}" for i in range(n)], dtype=object)
    return ids, np.arange(n) < dishonest


def test_holdout_is_stratified_seeded_and_order_free():
    from components.contracts.layout import holdout_cashiers

    ids, bad = _cashiers()
    held = holdout_cashiers(ids, bad, fraction=0.3, seed=13)
    assert len(held & set(ids[bad])) == 6  # round(0.3 * 20) dishonest
    assert len(held - set(ids[bad])) == 54  # round(0.3 * 180) honest
    order = np.random.default_rng(0).permutation(ids.size)
    # rows, not cashiers: duplicates collapse, any order, any row of a thief marks him
    rows = np.r_[ids[order], ids]
    flags = np.r_[bad[order], np.zeros(ids.size, bool)]
    assert holdout_cashiers(rows, flags, fraction=0.3, seed=13) == held
    assert holdout_cashiers(ids, bad, fraction=0.3, seed=14) != held
    assert holdout_cashiers(ids, bad, fraction=0.0, seed=13) == frozenset()
    with pytest.raises(InputError, match="holdout-cashier-fraction"):
        holdout_cashiers(ids, bad, fraction=1.0, seed=13)


def test_held_out_cashiers_rows_before_valid_end_are_holdout():
    from components.contracts.layout import HOLDOUT

    b = B.with_holdout(["C1"])
    assert TimeBoundaries.from_json(b.to_json()) == b  # the ids travel in time_splits
    ts = pd.Series(pd.to_datetime(["2026-01-02", "2026-01-06", "2026-01-08", "2026-01-02"]))
    got = assign_subset(ts, b, cashier_ids=["C1", "C1", "C1", "C2"])
    assert got.tolist() == [HOLDOUT, HOLDOUT, "test", "train"]
    assert assign_subset(ts, b).tolist() == ["train", "valid", "test", "train"]
