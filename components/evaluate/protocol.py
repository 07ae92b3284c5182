"""The leak-free protocol's measurements: block-bootstrap intervals, cohorts, and the
leave-one-type-out folds. Pure numpy, no I/O.

* Every operating threshold is fixed on VALID before TEST is looked at; TEST only counts.
* Intervals: 95% percentile intervals from ``BOOTSTRAP_DRAWS`` resamples of the test
  rows **by cashier blocks** (a cashier's rows are drawn together: one thief's thefts are
  not independent evidence), all draws in one vectorized product.
* Cohorts: cashiers with rows in train/valid ("seen") vs the rest ("unseen": held out by
  ``split`` or hired later); from the cohort label dates (``contracts.cohorts``, cut at the
  test period's first day) established cashiers, new hires, late turners, thieves and
  unseen thieves (thieves without train/valid rows); and any label-side ``cohort`` column.
  ``new_hire_false_alarm_ratio``: new hires' false-alarm rate over established cashiers'.
* Leave-one-type-out: per fraud type, a booster trained without its rows, the two-channel
  score refit (calibration, budget share, every threshold: ``thresholds.fit_channels``) on
  valid without its rows, its test recall at that fold's 1%-FPR point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from components.contracts import blend, cohorts
from components.contracts.bootstrap import BOOTSTRAP_DRAWS, Blocks
from components.evaluate import thresholds
from components.evaluate.thresholds import FPR_TARGET, threshold_at_fpr

# re-exported: evaluate's one import for the protocol
__all__ = ["BOOTSTRAP_DRAWS", "FPR_TARGET", "Blocks", "threshold_at_fpr"]

COHORTS_NOTE = (
    "seen_cashiers: has train/valid rows; unseen_cashiers: the others, i.e. "
    "held_out_cashiers (held out by split) and new_cashiers (first row in test); from the "
    "cohort label dates, cut at the test period's first day: established (hired before it "
    "or before the data), new_hires (hired on or after it), late_turners (started stealing "
    "on or after it), thieves (started stealing before the test period ended), "
    "unseen_thieves (thieves without train/valid rows)"
)
"""How each cohort of the report is defined (``metrics.json`` ``protocol.cohorts``)."""


def operating_point(
    scores: np.ndarray, labels: np.ndarray, threshold: float, blocks: Blocks, rows=None
) -> dict[str, dict]:
    """Recall, precision and false-alarm rate of ``score >= threshold`` (each with interval)."""
    flagged = np.asarray(scores) >= threshold
    y = np.asarray(labels, dtype=bool)
    return {
        "recall": blocks.rate(flagged, y, rows),
        "precision": blocks.rate(y, flagged, rows),
        "false_alarm_rate": blocks.rate(flagged, ~y, rows),
    }


def date_cohort_masks(
    subset: np.ndarray, timestamps: np.ndarray, hired_on: np.ndarray, turned_on: np.ndarray
) -> dict[str, np.ndarray]:
    """Row masks (all rows) of ``cohorts.DATE_COHORTS`` at evaluate's time cut: the test
    period's first day (no row from it on is fitted or chosen on) up to the day after its
    last row. Empty when the data carries no cohort dates (older data: all null)."""
    if not cohorts.has_dates(hired_on, turned_on):
        return {}
    days = cohorts.as_days(np.asarray(timestamps)[np.asarray(subset) == "test"])
    return cohorts.date_cohorts(hired_on, turned_on, cut=days.min(), end=days.max() + 1)


def cohort_masks(
    test_cashiers: np.ndarray,
    fitted_cashiers: np.ndarray,
    labelled: dict[str, np.ndarray],
    held_out_cashiers: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Test-row masks per cohort: ``seen_cashiers`` (cashier has train/valid rows),
    ``unseen_cashiers`` (not), split into ``held_out_cashiers`` (held out by ``split``: they
    have ``holdout`` rows) and ``new_cashiers`` (no row before the test period); a boolean
    label-side entry is a cohort mask itself (``date_cohort_masks``: with ``thieves``,
    ``unseen_thieves`` = thieves without train/valid rows), any other gives
    ``<name>_<value>`` for each of its values."""
    test_cashiers = np.asarray(test_cashiers).astype(str)
    seen = np.isin(test_cashiers, np.asarray(fitted_cashiers).astype(str))
    out = {"seen_cashiers": seen, "unseen_cashiers": ~seen}
    if held_out_cashiers is not None:
        held = np.isin(test_cashiers, np.asarray(held_out_cashiers).astype(str))
        out["held_out_cashiers"] = held & ~seen
        out["new_cashiers"] = ~held & ~seen
    for column, values in labelled.items():
        if np.asarray(values).dtype == bool:
            out[column] = np.asarray(values)
            continue
        values = np.asarray(values).astype(str)
        for value in sorted(set(values.tolist())):
            out[f"{column}_{value}"] = values == value
    if "thieves" in out:
        out["unseen_thieves"] = out["thieves"] & ~seen
    return out


def new_hire_false_alarm_ratio(
    flagged: np.ndarray, labels: np.ndarray, masks: dict[str, np.ndarray], blocks: Blocks
) -> dict[str, float]:
    """``new_hire_false_alarm_ratio`` (new hires' false-alarm rate over established
    cashiers', on the same cashier-block resamples) and its ``_ci_low`` / ``_ci_high``;
    empty without both cohorts."""
    if "new_hires" not in masks or "established" not in masks:
        return {}
    legit = ~np.asarray(labels, dtype=bool)
    r = blocks.rate_ratio(flagged, masks["new_hires"] & legit, masks["established"] & legit)
    key = "new_hire_false_alarm_ratio"
    return {key: r["value"], f"{key}_ci_low": r["ci_low"], f"{key}_ci_high": r["ci_high"]}


def flat_point(prefix: str, point: dict[str, dict]) -> dict[str, float]:
    """``operating_point`` as flat metrics: ``<prefix>_<metric>_at_1pct_fpr`` and its
    ``_ci_low`` / ``_ci_high``."""
    out: dict[str, float] = {}
    for name, r in point.items():
        key = f"{prefix}_{name}_at_1pct_fpr"
        out[key] = r["value"]
        out[f"{key}_ci_low"] = r["ci_low"]
        out[f"{key}_ci_high"] = r["ci_high"]
    return out


def leave_one_type_out(
    *,
    fold_margins: dict[str, Callable[[np.ndarray], np.ndarray]],
    X_valid: np.ndarray,
    X_test: np.ndarray,
    valid_labels: np.ndarray,
    valid_types: np.ndarray,
    test_types: np.ndarray,
    valid_forest: np.ndarray,
    test_forest: np.ndarray,
    train_forest: np.ndarray,
    blocks: Blocks,
    high_precision_target: float,
    medium_recall_target: float,
) -> dict[str, dict[str, Any]]:
    """Per held-out type: the fold's two-channel score fitted, and its 1%-FPR thresholds
    chosen, on the valid rows WITHOUT that type (its labels never reach a fitted or chosen
    number); then the share of that type's test rows flagged (with interval), for the fold's
    two-channel score ("blend"), its booster alone and the forest alone."""
    out: dict[str, dict[str, Any]] = {}
    for held_out, margin_of in fold_margins.items():
        target = np.asarray(test_types) == held_out
        if not target.any():
            continue
        keep = np.asarray(valid_types) != held_out
        m_valid, m_test = margin_of(X_valid[keep]), margin_of(X_test)
        params, _ = thresholds.fit_channels(
            valid_margin=m_valid,
            valid_iforest_score=valid_forest[keep],
            valid_labels=valid_labels[keep],
            train_iforest_score=train_forest,
            high_precision_target=high_precision_target,
            medium_recall_target=medium_recall_target,
        )
        fold: dict[str, Any] = {"test_rows": int(target.sum())}
        t = params.extra["threshold_at_1pct_fpr"]
        test_risk = blend.risk_score(m_test, test_forest, params)
        fold["blend"] = {**blocks.rate(test_risk >= t, target), "threshold": t}
        for name, (valid_score, test_score) in {
            "xgb": (m_valid, m_test),
            "iforest": (-valid_forest[keep], -test_forest),
        }.items():
            t = threshold_at_fpr(valid_score, valid_labels[keep])
            fold[name] = {**blocks.rate(np.asarray(test_score) >= t, target), "threshold": t}
        fold["anomaly_share"] = params.extra["anomaly_share"]
        out[held_out] = fold
    return out


def loto_summary(folds: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flat LOTO metrics: per type (blend, with interval; booster and forest alone), mean, min."""
    out: dict[str, float] = {}
    for name, fold in folds.items():
        r = fold["blend"]
        out[f"loto_recall_{name}"] = r["value"]
        out[f"loto_recall_{name}_ci_low"] = r["ci_low"]
        out[f"loto_recall_{name}_ci_high"] = r["ci_high"]
        out[f"loto_xgb_recall_{name}"] = fold["xgb"]["value"]
        out[f"loto_iforest_recall_{name}"] = fold["iforest"]["value"]
    for model, prefix in (("blend", "loto_recall"), ("iforest", "loto_iforest_recall")):
        values = [fold[model]["value"] for fold in folds.values()]
        if values:
            out[f"{prefix}_mean"] = float(np.mean(values))
            out[f"{prefix}_min"] = float(np.min(values))
    return out
