"""The seed-contract view (``evaluate.views``): the same models and valid-fixed thresholds on
the test rows with every optional input missing; a signal carried only by an optional field
is lost there, a signal in the seven brief fields is not."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluate import logic, report, views

COLUMNS = ("void_count", "void_amount", "scan_duration_s")
"""A required field and two optional ones."""


def _table(signal: str, n: int = 1800, seed: int = 4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(COLUMNS)))
    subset = np.array(["train", "valid", "test"] * (n // 3), dtype=object)
    labels = rng.random(n) < 0.1
    fraud_type = np.where(labels, "void_abuse", "none").astype(object)
    X[labels, COLUMNS.index(signal)] += 6.0
    cashier = np.array([f"C{i % 25}" for i in range(n)], dtype=object)
    test = subset == "test"
    cashier[test] = [f"C{j % 35}" for j in range(int(test.sum()))]  # 10 unseen cashiers
    return X, subset, labels, fraud_type, cashier


def _evaluate(signal: str):
    """A 'booster' that uses what it is given and treats a missing input as 0 (ordinary)."""
    return logic.evaluate_models(
        *_table(signal),  # X, subset, labels, fraud_type, cashier
        logic.Scorers(
            xgb_margin=lambda r: np.nan_to_num(r[:, :2]).sum(axis=1),
            forest_score=lambda r: -np.abs(np.nan_to_num(r[:, 2])),
        ),
        high_precision_target=0.8,
        medium_recall_target=0.95,
        feature_names=COLUMNS,
    ).metrics


def test_a_signal_in_an_optional_field_is_lost_in_the_seed_view():
    m = _evaluate("void_amount")
    s = m["summary"]
    assert s["blend_recall_at_1pct_fpr"] > 0.8
    assert s["seed_view_blend_recall_at_1pct_fpr"] < 0.2
    assert s["seed_view_recall_gap_ci_low"] > 0.5  # paired interval, clearly above 0
    view = m[views.VIEW]
    assert (
        view["threshold_at_1pct_fpr"] == m["threshold_selection"]["threshold_at_1pct_fpr"]["blend"]
    )
    assert "void_amount" in view["fields_missing"] and "void_count" in view["fields_sent"]


def test_a_signal_in_the_seven_fields_survives_the_seed_view():
    s = _evaluate("void_count")["summary"]
    assert s["seed_view_blend_recall_at_1pct_fpr"] > 0.8
    assert s["seed_view_blend_recall_at_1pct_fpr"] == pytest.approx(
        s["blend_recall_at_1pct_fpr"], abs=0.1
    )
    for key in ("seed_view_blend_pr_auc", "seed_view_blend_false_alarm_rate_at_1pct_fpr",
                "seed_view_blend_recall_at_1pct_fpr_void_abuse_ci_high",
                "seed_view_unseen_cashiers_recall_at_1pct_fpr"):  # fmt: skip
        assert key in s


def test_the_report_shows_both_views():
    md = report.render_markdown(_evaluate("void_amount"))
    assert "## Seed-contract view" in md
    section = md.split("## Seed-contract view")[1].split("##")[0]
    assert "| full |" in section and "| seed contract |" in section and "| void_abuse |" in section
