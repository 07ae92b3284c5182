"""The simulator's online quality per cashier cohort and the live-vs-frozen side-by-side table."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pyarrow as pa
import pytest

from components.contracts import storage
from components.contracts.schemas import LIVE_LABELS
from tools.simulator import RequestResult, SimulatorConfig, build_report
from tools.simulator.cohorts import (
    format_cohort_table,
    load_cohort_dates,
    quality_by_cohort,
)
from tools.simulator.compare import main

DAY0 = dt.date(2026, 2, 1)  # the first replayed day: the cut
SCORE = {"Low Risk": 5.0, "Medium Risk": 40.0, "High Risk": 90.0}


def _stream(levels_by_cashier: dict[str, list[str]]):
    """Transactions (two days) per cashier, its answered results and labels: a row is fraud
    when its id ends in ``f``."""
    transactions, results, labels = [], [], {}
    for cashier, levels in levels_by_cashier.items():
        for j, level in enumerate(levels):
            i = len(transactions)
            fraud = level.endswith("!")
            tid = f"{cashier}-{j}{'f' if fraud else ''}"
            day = DAY0 + dt.timedelta(days=j % 2)
            transactions.append(
                {"transaction_id": tid, "cashier_id": cashier, "timestamp": f"{day}T10:00:00"}
            )
            level = level.rstrip("!")
            results.append(RequestResult(i, tid, 200, 0.01, 1, level, SCORE[level]))
            labels[tid] = (fraud, "void_abuse" if fraud else "none")
    return transactions, results, labels


LEVELS = {
    # established, honest: 1 false alarm (Medium) in 10
    "E1": ["Low Risk"] * 9 + ["Medium Risk"],
    "E2": ["Low Risk"] * 10,
    # new hire (hired on the cut day), honest: 3 false alarms (1 High) in 10
    "N1": ["Low Risk"] * 7 + ["Medium Risk", "Medium Risk", "High Risk"],
    # established late turner (turned on day 2): one theft caught at High, one missed
    "L1": ["Low Risk"] * 8 + ["High Risk!", "Low Risk!"],
}
DATES = {"N1": (DAY0, None), "L1": (None, DAY0 + dt.timedelta(days=1))}


def _dates(transactions):
    return {t["transaction_id"]: DATES.get(t["cashier_id"], (None, None)) for t in transactions}


def test_quality_by_cohort_counts_each_cohort_and_the_new_hire_ratio():
    transactions, results, labels = _stream(LEVELS)
    results.append(RequestResult(len(results), "E2-x", None, 0.01, 4, None, None))  # failed
    q = quality_by_cohort(results, transactions, labels, _dates(transactions))
    assert q["cut"] == str(DAY0)
    c = q["cohorts"]
    assert (c["established"]["transactions"], c["new_hires"]["transactions"]) == (30, 10)
    assert (c["established"]["cashiers"], c["new_hires"]["cashiers"]) == (3, 1)
    assert (c["late_turners"]["frauds"], c["thieves"]["transactions"]) == (2, 10)
    est, new = c["established"]["Medium Risk or above"], c["new_hires"]["Medium Risk or above"]
    assert est["false_alarm_rate"]["value"] == pytest.approx(1 / 28)
    assert new["false_alarm_rate"]["value"] == pytest.approx(3 / 10)
    assert c["late_turners"]["High Risk or above"]["recall"]["value"] == pytest.approx(0.5)
    assert c["new_hires"]["High Risk or above"]["false_alarm_rate"]["value"] == pytest.approx(0.1)
    ratio = q["new_hire_false_alarm_ratio"]
    assert ratio["Medium Risk or above"]["value"] == pytest.approx((3 / 10) / (1 / 28))
    assert (
        ratio["High Risk or above"]["value"] is None
    )  # established: no High false alarm (ratio inf)
    json.dumps(q, allow_nan=False)  # NaN / inf written as null
    by_score = quality_by_cohort(
        results, transactions, labels, _dates(transactions), alert_score=30
    )
    assert by_score["alerts"] == ["Medium Risk or above", "High Risk or above", "risk_score >= 30"]
    for cohort in by_score["cohorts"].values():  # scores >= 30 are exactly Medium and High
        assert cohort["risk_score >= 30"] == cohort["Medium Risk or above"]


def test_side_by_side_table_and_the_report_and_cli(tmp_path, capsys):
    transactions, results, labels = _stream(LEVELS)
    dates = _dates(transactions)
    frozen = build_report(
        "x", SimulatorConfig(), results, 1.0, labels, transactions=transactions, cohort_dates=dates
    )
    calmer = [replace(r, risk_level="Low Risk") if r.transaction_id.startswith("N1") else r
              for r in results]  # fmt: skip
    live = build_report(
        "x", SimulatorConfig(), calmer, 1.0, labels, transactions=transactions, cohort_dates=dates
    )
    assert build_report("x", SimulatorConfig(), results, 1.0, labels)["cohorts"] is None
    text = format_cohort_table({"frozen": frozen, "live": live})
    assert "frozen recall" in text and "live false alarms" in text
    assert "new-hire false-alarm ratio" in text and "live 0.000" in text
    for name, report in (("frozen", frozen), ("live", live)):
        storage.write_json(report, str(tmp_path / f"{name}.json"))
    assert main([f"frozen={tmp_path / 'frozen.json'}", f"live={tmp_path / 'live.json'}"]) == 0
    assert capsys.readouterr().out.strip() == text
    assert main(["frozen.json"]) == 2


def test_load_cohort_dates_none_for_older_labels(tmp_path):
    rows = {"transaction_id": ["A", "B"], "is_fraud": [False, True], "fraud_type": ["none", "void_abuse"]}  # fmt: skip
    old = pa.table(rows, schema=pa.schema(LIVE_LABELS.field(n) for n in rows))
    storage.write_table(old, str(tmp_path / "old.parquet"))
    assert load_cohort_dates(str(tmp_path / "old.parquet")) is None
    new = pa.table({**rows, "cashier_hired_on": [DAY0, None]}).cast(
        pa.schema(LIVE_LABELS.field(n) for n in [*rows, "cashier_hired_on"])
    )
    storage.write_table(new, str(tmp_path / "new.parquet"))
    assert load_cohort_dates(str(tmp_path / "new.parquet")) == {
        "A": (DAY0, None),
        "B": (None, None),
    }
