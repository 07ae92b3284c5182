"""The realism report (``components.datagen.realism``) and the realism of the default world,
measured on small seeded data."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.contracts.schemas import FRAUD_TYPES
from components.datagen.logic import DatagenParams, generate
from components.datagen.realism import (
    format_report,
    realism_report,
    recall_at_fpr,
)
from tools import realism as realism_cli

MID = DatagenParams(rows=60_000, days=28, stores=4, cashiers_per_store=10, seed=2)
"""Default fraud rate and shape, fewer stores: every cohort and every type present."""


@pytest.fixture(scope="module")
def report() -> dict:
    return realism_report(pa.concat_tables(list(generate(MID))))


def test_recall_at_fpr_threshold_from_honest_rows_only():
    honest = np.arange(1000, dtype=float)  # 1 % above 989
    recall, fpr, threshold = recall_at_fpr(honest, honest, np.array([995.0, 985.0, np.nan]))
    assert threshold == 989.0
    assert fpr == pytest.approx(0.01)
    assert recall == pytest.approx(1 / 3)  # NaN never alarms
    # Ties at a common value never alarm: 1 void on 1.5 % of honest rows.
    tied = np.r_[np.zeros(985), np.ones(15)]
    recall, fpr, _ = recall_at_fpr(tied, tied, np.ones(5))
    assert recall == 0.0 and fpr == 0.0


def test_a_separable_field_is_found():
    rng = np.random.default_rng(0)
    n = 4_000
    fraud = np.arange(n) < 100
    df = pd.DataFrame(
        {
            "transaction_id": np.arange(n).astype(str),
            "timestamp": pd.Timestamp("2026-01-05 10:00"),
            "cashier_id": "C0001",
            "lane_type": "staffed",
            **{
                f: rng.random(n)
                for f in ("item_count", "total_amount", "discount_amount", "weight_variance")
            },
            "is_fraud": fraud,
            "fraud_type": np.where(fraud, "void_abuse", "none"),
        }
    )
    df["void_amount"] = np.where(fraud, 100.0, rng.random(n))
    best = realism_report(df)["best_single_field_at_1pct_fpr"]["void_abuse"]
    assert best["field"] == "void_amount" and best["recall"] == 1.0
    df["void_amount"] = -df["void_amount"]  # low values suspicious: found too
    best = realism_report(df)["best_single_field_at_1pct_fpr"]["void_abuse"]
    assert best["field"] == "-void_amount" and best["recall"] == 1.0


def test_no_type_is_separable_by_one_raw_field(report):
    """The aim is 0.6 at 200k rows (see the README); this sample is smaller and noisier."""
    best = report["best_single_field_at_1pct_fpr"]
    assert set(best) == set(FRAUD_TYPES) - {"none"}
    for name, b in best.items():
        assert b["rows"] >= 20, name
        assert b["recall"] < 0.7, (name, b)
        assert b["fpr"] < 0.02, (name, b)


def test_theft_is_rare_and_clustered(report):
    t = report["theft_per_shift"]
    assert t["thieves"] >= 3
    assert t["share_of_shifts_with_theft"] < 0.75  # not every shift
    assert t["events_per_theft_shift_median"] <= 4
    assert t["events_per_theft_shift_p90"] <= 12
    assert 0.005 < t["fraud_share_of_thieves_transactions"] < 0.06
    assert report["fraud_share"] == pytest.approx(MID.fraud_rate, rel=0.15)


def test_turnover_new_hires_every_week_late_turners_leavers(report):
    c = report["cohorts"]
    # A slot holder who leaves before their first working day never appears.
    assert 0.9 * MID.stores * MID.cashiers_per_store <= c["established"]
    assert c["established"] <= MID.stores * MID.cashiers_per_store
    assert set(c["new_hires_per_week"]) == {str(w) for w in range(MID.days // 7)}
    assert all(v >= 1 for v in c["new_hires_per_week"].values())
    # A new hire takes a leaver's slot (a leaver may go before working a day here).
    assert c["new_hires"] - 2 <= c["leavers"] <= c["new_hires"]
    assert c["late_turners"] >= 1 and c["thieves_who_leave"] >= 1
    assert c["cashiers"] == c["established"] + c["new_hires"]


def test_report_formats_and_is_json(report):
    text = "\n".join(format_report(report))
    assert "scan_avoidance" in text and "new hires per week" in text
    assert json.loads(json.dumps(report)) == report


def test_same_seed_same_bytes():
    small = DatagenParams(rows=5_000, days=7, stores=2, cashiers_per_store=6, seed=11)

    def parquet_bytes() -> bytes:
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(list(generate(small))), buf)
        return buf.getvalue()

    assert parquet_bytes() == parquet_bytes()


def test_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "realism.json"
    realism_cli.main(["--rows", "20000", "--seed", "3", "--out", str(out)])
    assert "best single field" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows"] == 20_000
