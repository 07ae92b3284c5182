"""Cohorts from the cohort label dates: the derivation (``contracts.cohorts``), the paired
ratio interval (``Blocks.rate_ratio``), and evaluate's cohort table and new-hire ratio."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
from published import publish_in_place

from components.contracts.bootstrap import Blocks
from components.contracts.cohorts import DATE_COHORTS, as_days, date_cohorts, has_dates
from components.evaluate import logic, protocol

CUT, END = dt.date(2026, 1, 10), dt.date(2026, 1, 15)
D = dt.date


@pytest.mark.parametrize(
    ("hired", "turned", "expected"),
    [
        (None, None, {"established"}),  # employed before the data, honest
        (D(2026, 1, 9), None, {"established"}),  # hired the day before the cut
        (D(2026, 1, 10), None, {"new_hires"}),  # hired on the cut day: no history before it
        (D(2026, 1, 12), D(2026, 1, 12), {"new_hires", "late_turners", "thieves"}),
        (None, D(2026, 1, 3), {"established", "thieves"}),  # stole before the cut
        (None, D(2026, 1, 14), {"established", "late_turners", "thieves"}),
        (None, D(2026, 1, 15), {"established"}),  # turns after the scored period: honest in it
    ],
)
def test_date_cohorts_follow_the_dates_and_the_cut(hired, turned, expected):
    masks = date_cohorts([hired], [turned], cut=CUT, end=END)
    assert list(masks) == list(DATE_COHORTS)
    assert {name for name, m in masks.items() if m[0]} == expected


def test_date_cohorts_read_arrow_dates_and_older_data_has_none():
    hired = pa.array([None, 20_463], type=pa.date32())  # 20463 days = 2026-01-10
    assert as_days(hired.to_numpy(zero_copy_only=False)).tolist() == [None, D(2026, 1, 10)]
    assert date_cohorts(hired.to_numpy(zero_copy_only=False), [None, None], cut=CUT)[
        "new_hires"
    ].tolist() == [False, True]
    assert has_dates(hired.to_numpy(zero_copy_only=False), [None, None])
    assert not has_dates(pa.nulls(3, pa.date32()).to_numpy(zero_copy_only=False), [None] * 3)


def test_rate_ratio_is_the_ratio_of_the_two_rates_with_an_interval():
    rng = np.random.default_rng(0)
    cashier = np.repeat([f"C{i}" for i in range(40)], 100)
    a = np.isin(cashier, [f"C{i}" for i in range(10)])  # 10 "new hire" cashiers
    hit = rng.random(cashier.size) < np.where(a, 0.1, 0.02)
    r = Blocks(cashier, draws=300).rate_ratio(hit, a, ~a)
    assert r["value"] == pytest.approx(hit[a].mean() / hit[~a].mean())
    assert r["ci_low"] < r["value"] < r["ci_high"] and r["n"] == a.sum()
    assert r["ci_low"] > 1  # five times the rate, 1000 rows vs 3000
    never = Blocks(cashier).rate_ratio(hit & a, a, ~a)  # denominator rate 0
    assert never["value"] == math.inf and math.isnan(never["ci_low"])
    assert math.isnan(Blocks(cashier).rate_ratio(hit, a & ~a, ~a)["value"])  # empty cohort


def test_cohort_masks_take_boolean_label_cohorts_and_add_unseen_thieves():
    test_cashiers = np.array(["A", "A", "B", "C", "D"])
    labelled = {
        "established": np.array([1, 1, 1, 0, 1], dtype=bool),
        "thieves": np.array([1, 1, 0, 1, 0], dtype=bool),
        "cohort": np.array(["x", "x", "y", "y", "y"], dtype=object),
    }
    masks = protocol.cohort_masks(test_cashiers, np.array(["A", "B"]), labelled)
    assert masks["established"].tolist() == [True, True, True, False, True]
    assert masks["unseen_thieves"].tolist() == [False, False, False, True, False]
    assert masks["cohort_y"].tolist() == [False, False, True, True, True]


def _dated_table(n: int = 1800, seed: int = 5):
    """Rows over 12 days (valid days 0-7, test 8-11); cashiers C0-C19 seen, C20-C29 only in
    test; C20-C24 hired on the first test day, their legitimate rows look fraudulent more often;
    C1 and C25 turn dishonest on day 9."""
    rng = np.random.default_rng(seed)
    day = np.arange(n) * 12 // n
    subset = np.where(day < 4, "train", np.where(day < 8, "valid", "test")).astype(object)
    ts = np.datetime64("2026-01-01") + day.astype("timedelta64[D]")
    cashier = np.array([f"C{i % 20}" for i in range(n)], dtype=object)
    test = subset == "test"
    cashier[test] = [f"C{j % 30}" for j in range(int(test.sum()))]
    labels = rng.random(n) < 0.1
    X = rng.normal(size=(n, 2))
    X[labels, 0] += 3.0
    new = np.isin(cashier, [f"C{i}" for i in range(20, 25)])
    X[new & ~labels, 0] += 1.5
    first_test = np.datetime64("2026-01-09")
    hired = np.where(new, first_test, np.datetime64("NaT"))
    turned = np.where(np.isin(cashier, ["C1", "C25"]), first_test + 1, np.datetime64("NaT"))
    fraud_type = np.where(labels, "void_abuse", "none").astype(object)
    return X, subset, labels, fraud_type, cashier, ts, hired, turned


def test_evaluate_reports_date_cohorts_and_the_new_hire_false_alarm_ratio():
    X, subset, labels, fraud_type, cashier, ts, hired, turned = _dated_table()
    masks = protocol.date_cohort_masks(subset, ts, hired, turned)
    result = logic.evaluate_models(
        X, subset, labels, fraud_type, cashier,
        logic.Scorers(xgb_margin=lambda r: r[:, 0], forest_score=lambda r: -np.abs(r[:, 1])),
        high_precision_target=0.8, medium_recall_target=0.95, label_cohorts=masks,
        feature_names=("item_count", "void_count"),  # required fields: nothing to mask
    )  # fmt: skip
    cohorts, s = result.metrics["cohorts"], result.metrics["summary"]
    for name in (*DATE_COHORTS, "unseen_thieves"):
        assert name in cohorts
    test = subset == "test"
    assert cohorts["established"]["rows"] + cohorts["new_hires"]["rows"] == test.sum()
    assert (
        cohorts["new_hires"]["rows"]
        == np.isin(cashier[test], [f"C{i}" for i in range(20, 25)]).sum()
    )
    # C1 (seen) and C25 (test only) turned on day 9: both late turners, only C25 unseen
    assert cohorts["late_turners"]["rows"] == np.isin(cashier[test], ["C1", "C25"]).sum()
    assert cohorts["unseen_thieves"]["rows"] == (cashier[test] == "C25").sum()
    far = {k: cohorts[k]["false_alarm_rate"]["value"] for k in ("new_hires", "established")}
    assert s["new_hire_false_alarm_ratio"] == pytest.approx(far["new_hires"] / far["established"])
    assert s["new_hire_false_alarm_ratio"] > 1.5  # their legitimate rows were made to look odd
    low, high = s["new_hire_false_alarm_ratio_ci_low"], s["new_hire_false_alarm_ratio_ci_high"]
    assert low <= s["new_hire_false_alarm_ratio"] <= high
    from components.evaluate.report import render_markdown

    assert "New hires' false-alarm rate over established cashiers'" in render_markdown(
        logic.json_safe(result.metrics)
    )


def test_older_data_without_cohort_dates_has_no_date_cohorts():
    subset, ts = _dated_table(600)[1], _dated_table(600)[5]
    none = np.full(subset.size, np.datetime64("NaT"))
    assert protocol.date_cohort_masks(subset, ts, none, none) == {}


def test_read_features_derives_the_date_cohorts(tmp_path):
    """The feature table's cohort label columns become evaluate's date cohorts, cut at the
    first test day."""
    import pyarrow.parquet as pq

    from components.evaluate.__main__ import read_features
    from tests.unit.test_evaluate import synthetic_features

    n = 600  # every row on 2026-01-05: the test period's first day is the cut
    cashier = np.array([f"C{i % 7}" for i in range(n)])
    hired = {"C5": D(2026, 1, 4), "C6": D(2026, 1, 5)}
    turned = {"C4": D(2026, 1, 6)}  # after the last test day: honest in every scored row
    table = synthetic_features(
        n,
        cohort_dates={
            "cashier_hired_on": [hired.get(c) for c in cashier],
            "cashier_turned_on": [turned.get(c) for c in cashier],
        },
    )
    pq.write_table(table, tmp_path / "f.parquet")
    rows = read_features(str(publish_in_place(tmp_path / "f.parquet")))
    assert list(rows.cohorts) == list(DATE_COHORTS)
    assert rows.cohorts["new_hires"].tolist() == (cashier == "C6").tolist()
    assert not rows.cohorts["thieves"].any()
