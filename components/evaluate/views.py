"""The seed-contract view: the test metrics as if every client sent only the seed brief's
seven fields (``schemas.REQUIRED_FIELDS``), next to the full view. Pure numpy, no I/O.

The test rows are scored again with every optional input missing (``contracts.missing.
mask_fields``: exactly the NaN features ``features.raw_row`` makes of a seven-field request)
by the SAME models, blend and thresholds: the valid-fixed 1%-FPR threshold and the High
band serving uses. Nothing is refitted or re-chosen for the view, so its false-alarm rate is
measured, not fixed: a POS that sends less may also raise more (or fewer) false alarms.

Reported: recall / precision / false-alarm rate at the 1%-FPR threshold, ROC-AUC, PR-AUC,
recall per fraud type, High-band recall and precision, the unseen cashiers' recall, and the
full-minus-seed recall gap (paired: the same cashier resamples for both views), each rate
with its 95% cashier-block bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from components.contracts import blend
from components.contracts.blend import BlendParams
from components.contracts.features import MASKABLE_FIELDS
from components.contracts.missing import mask_fields
from components.contracts.schemas import REQUIRED_FIELDS
from components.evaluate import protocol

if TYPE_CHECKING:
    from components.evaluate.logic import Scored, Scorers

VIEW = "seed_contract_view"
"""Key of the view in ``metrics.json``."""
PREFIX = "seed_view"
"""Prefix of the view's flat metrics (``seed_view_blend_recall_at_1pct_fpr``, ...)."""


def seed_contract_view(
    X_test: np.ndarray,
    feature_names: Sequence[str],
    scorers: Scorers,
    params: BlendParams,
    operating: dict[str, float],
    test: Scored,
    blocks: protocol.Blocks,
    unseen: np.ndarray | None = None,
) -> dict[str, Any]:
    """Score the test rows with every optional input missing; count at the full view's
    valid-fixed thresholds (``operating``: model -> 1%-FPR threshold; ``params.thresholds``).

    Args:
        X_test: Test feature matrix, as sent in full.
        feature_names: Its columns (``FEATURE_NAMES``).
        scorers: The production booster's margin and the forest's ``score_samples``.
        params: The fitted blend with its High / Medium thresholds.
        operating: Valid-fixed 1%-FPR threshold per model (``xgb``, ``blend``).
        test: The test labels, fraud types and full-view blend scores (the paired gap).
        blocks: Cashier blocks of the test rows (intervals).
        unseen: Test rows of cashiers never trained on (a cohort), if known.
    """
    from components.evaluate.logic import FRAUD_PATTERNS, pr_auc, roc_auc

    X = mask_fields(X_test, feature_names, MASKABLE_FIELDS)
    margin, forest = scorers.xgb_margin(X), scorers.forest_score(X)
    risk = blend.risk_score(margin, forest, params)
    y = np.asarray(test.labels, dtype=bool)
    types = np.asarray(test.fraud_type)
    t = operating["blend"]
    flagged = risk >= t
    high = risk >= params.thresholds.high
    view: dict[str, Any] = {
        "fields_sent": list(REQUIRED_FIELDS),
        "fields_missing": list(MASKABLE_FIELDS),
        "threshold_at_1pct_fpr": t,
        "threshold_rule": "the full view's: fixed on VALID as sent in full (what serving uses)",
        "blend": {
            "roc_auc": roc_auc(risk, y),
            "pr_auc": pr_auc(risk, y),
            "at_1pct_fpr": protocol.operating_point(risk, y, t, blocks),
            "high_recall": blocks.rate(high, y),
            "high_precision": blocks.rate(y, high),
            "recall_by_type_at_1pct_fpr": {
                name: blocks.rate(flagged, types == name) for name in FRAUD_PATTERNS
            },
        },
        "xgb": {
            "pr_auc": pr_auc(margin, y),
            "at_1pct_fpr": protocol.operating_point(margin, y, operating["xgb"], blocks),
        },
        "recall_gap": blocks.paired_difference(np.asarray(test.blend) >= t, flagged, y),
    }
    if unseen is not None:
        view["unseen_cashiers"] = protocol.operating_point(risk, y, t, blocks, rows=unseen)
    return view


def flat_summary(view: dict[str, Any]) -> dict[str, float]:
    """The view's flat metrics (KFP Metrics, MLflow): ``seed_view_*``, finite values only."""
    b = view["blend"]
    out: dict[str, float] = {
        f"{PREFIX}_blend_roc_auc": b["roc_auc"],
        f"{PREFIX}_blend_pr_auc": b["pr_auc"],
        f"{PREFIX}_xgb_pr_auc": view["xgb"]["pr_auc"],
    }
    out.update(protocol.flat_point(f"{PREFIX}_blend", b["at_1pct_fpr"]))
    out.update(
        protocol.flat_point(f"{PREFIX}_xgb", {"recall": view["xgb"]["at_1pct_fpr"]["recall"]})
    )
    if "unseen_cashiers" in view:
        out.update(protocol.flat_point(f"{PREFIX}_unseen_cashiers", view["unseen_cashiers"]))
    rates = {"recall_gap": view["recall_gap"], "blend_high_recall": b["high_recall"]}
    rates |= {
        f"blend_recall_at_1pct_fpr_{name}": r
        for name, r in b["recall_by_type_at_1pct_fpr"].items()
        if r["n"]
    }
    for name, r in rates.items():
        key = f"{PREFIX}_{name}"
        out.update({key: r["value"], f"{key}_ci_low": r["ci_low"], f"{key}_ci_high": r["ci_high"]})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def markdown_lines(view: dict[str, Any] | None, full: dict[str, Any]) -> list[str]:
    """The report's section on the view, next to the full view's numbers (``full``: the
    ``models`` entry of ``metrics.json``)."""
    if not view:
        return []
    from components.evaluate.report import _ci, _fmt

    b, fb = view["blend"], full["blend"]
    lines = [
        "",
        "## Seed-contract view (only the seven brief fields sent)",
        "",
        f"Every optional input missing ({', '.join(view['fields_missing'])}); same models, "
        "same valid-fixed thresholds as the full view (nothing refitted), so the view's "
        "false-alarm rate is measured, not fixed. Gap = full minus seed recall (paired "
        f"resamples): {_ci(view['recall_gap'])}.",
        "",
        "| view | PR-AUC | recall @ 1% FPR | precision @ 1% FPR | test FPR | High recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in (("full", fb), ("seed contract", b)):
        p = m["at_1pct_fpr"]
        lines.append(
            f"| {name} | {_fmt(m['pr_auc'])} | {_ci(p['recall'])} | {_ci(p['precision'])} | "
            f"{_ci(p['false_alarm_rate'])} | {_ci(m['high_recall'])} |"
        )
    lines += ["", "| fraud type | full @ 1% FPR | seed contract @ 1% FPR |", "|---|---|---|"]
    for pattern, r in b["recall_by_type_at_1pct_fpr"].items():
        lines.append(
            f"| {pattern} | {_ci(fb['recall_by_type_at_1pct_fpr'].get(pattern))} | {_ci(r)} |"
        )
    return lines
