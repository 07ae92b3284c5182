"""The realism report (``components.datagen.realism``): the measurement itself, on small
seeded data (what it says of today's generator is in the README, not asserted here)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from components.contracts.schemas import FRAUD_TYPES
from components.datagen.logic import DatagenParams, generate
from components.datagen.realism import (
    format_report,
    realism_report,
    recall_at_fpr,
)
from tools import realism as realism_cli

MID = DatagenParams(rows=30_000, days=28, stores=4, cashiers_per_store=10, seed=2)
"""Default fraud rate and shape, fewer stores: every type present."""


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


def test_report_formats_and_is_json(report):
    text = "\n".join(format_report(report))
    assert "scan_avoidance" in text and "best single field" in text
    assert set(report["best_single_field_at_1pct_fpr"]) == set(FRAUD_TYPES) - {"none"}
    assert json.loads(json.dumps(report)) == report


def test_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "realism.json"
    realism_cli.main(["--rows", "20000", "--seed", "3", "--out", str(out)])
    assert "best single field" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows"] == 20_000
