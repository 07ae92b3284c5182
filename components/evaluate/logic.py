"""Evaluate logic: metrics and threshold rules. Pure numpy, no I/O.

``evaluate_models`` scores the feature table with both models (given as functions), fits the
two-channel score and its thresholds (``thresholds.py``) and calls the rest (intervals,
cohorts and leave-one-type-out folds: ``protocol.py``); plots and reports are built in
``report.py`` from the dicts returned here.

Nothing fitted or chosen sees TEST: the supervised channel's calibration, the budget share,
both channels' High / Medium / 1%-FPR thresholds and the drift reference histogram come from
VALID (the forest's center/scale and the anomaly features' norms from TRAIN); TEST is scored
once and only counted. The report's "blend" is the two-channel 0-100 risk score; "xgb" and
"iforest" are each model alone at its own valid-fixed 1%-FPR threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from components.contracts import blend
from components.contracts.blend import BlendParams, Thresholds
from components.contracts.features import FEATURE_NAMES
from components.contracts.layout import HOLDOUT
from components.contracts.schemas import FRAUD_TYPES, RISK_LEVELS
from components.evaluate import protocol, thresholds, views
from components.evaluate.protocol import threshold_at_fpr
from components.evaluate.thresholds import (  # noqa: F401  (re-exported: one import for callers)
    choose_thresholds,
    precision_at,
    recall_at,
)

log = logging.getLogger(__name__)

MODELS = ("xgb", "iforest", "blend")
FRAUD_PATTERNS = tuple(t for t in FRAUD_TYPES if t != "none")


@dataclass(frozen=True)
class Scored:
    """One subset's labels and the three scores (higher = more suspicious for all three)."""

    labels: np.ndarray
    """bool (n,) is_fraud."""
    fraud_type: np.ndarray
    """object (n,) fraud_type names ("none" for legitimate rows)."""
    xgb: np.ndarray
    """XGBoost margin (log-odds)."""
    iforest: np.ndarray
    """Anomaly score ``-score_samples`` (higher = more anomalous)."""
    blend: np.ndarray
    """Blended 0-100 risk score."""

    def score(self, model: str) -> np.ndarray:
        return getattr(self, model)


# ---------------------------------------------------------------- ranking metrics


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN with a single class."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, scores))


def pr_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (the step-wise area under the precision-recall curve)."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return math.nan
    return float(average_precision_score(labels, scores))


def recall_by_type(
    scores: np.ndarray, fraud_type: np.ndarray, threshold: float
) -> dict[str, float | None]:
    """Share of each fraud pattern's rows scoring at or above ``threshold`` (None if absent)."""
    out: dict[str, float | None] = {}
    flagged = np.asarray(scores) >= threshold
    types = np.asarray(fraud_type)
    for name in FRAUD_PATTERNS:
        mask = types == name
        out[name] = float(flagged[mask].mean()) if mask.any() else None
    return out


# ---------------------------------------------------------------- reports


def model_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    fraud_type: np.ndarray,
    threshold: float,
    blocks: protocol.Blocks,
) -> dict[str, Any]:
    """ROC-AUC, PR-AUC, and at the valid-fixed 1%-FPR ``threshold``: recall, precision and
    the test false-alarm rate (with intervals), recall per fraud pattern."""
    point = protocol.operating_point(scores, labels, threshold, blocks)
    types = np.asarray(fraud_type)
    flagged = np.asarray(scores) >= threshold
    return {
        "roc_auc": roc_auc(scores, labels),
        "pr_auc": pr_auc(scores, labels),
        "threshold_at_1pct_fpr": threshold,
        "threshold_rule": "at most 1% of the VALID legitimate rows score at or above it",
        "at_1pct_fpr": point,
        "recall_by_type_at_1pct_fpr": {
            name: blocks.rate(flagged, types == name) for name in FRAUD_PATTERNS
        },
    }


def level_confusion(
    scores: np.ndarray, fraud_type: np.ndarray, thresholds: Thresholds
) -> dict[str, dict[str, int]]:
    """Counts of rows per true fraud type (incl. "none") and assigned risk level."""
    levels = blend.risk_levels(scores, thresholds)
    types = np.asarray(fraud_type)
    return {
        name: {lv: int(np.sum((types == name) & (levels == lv))) for lv in RISK_LEVELS}
        for name in FRAUD_TYPES
        if np.any(types == name)
    }


def blend_band_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    fraud_type: np.ndarray,
    thresholds: Thresholds,
    blocks: protocol.Blocks,
) -> dict[str, Any]:
    """Precision/recall (with intervals) of the High band and of "Medium or High", plus
    level shares and recall per pattern at each band."""
    levels = blend.risk_levels(scores, thresholds)
    y = np.asarray(labels, dtype=bool)
    out: dict[str, Any] = {}
    for band, t in (("high", thresholds.high), ("medium", thresholds.medium)):
        flagged = np.asarray(scores) >= t
        out[f"{band}_precision"] = blocks.rate(y, flagged)
        out[f"{band}_recall"] = blocks.rate(flagged, y)
    out["level_share"] = {lv: float(np.mean(levels == lv)) for lv in RISK_LEVELS}
    out["recall_by_type_at_medium"] = recall_by_type(scores, fraud_type, thresholds.medium)
    out["recall_by_type_at_high"] = recall_by_type(scores, fraud_type, thresholds.high)
    return out


def summarize(
    *,
    test: Scored,
    params: BlendParams,
    threshold_info: dict[str, Any],
    operating: dict[str, float],
    blocks: protocol.Blocks,
    cohorts: dict[str, np.ndarray],
    loto: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The full ``metrics.json``: per-model metrics, bands, cohorts, LOTO, flat summary.

    Every recall / precision / false-alarm rate in the flat summary comes with its
    ``_ci_low`` / ``_ci_high`` (95%, cashier-block bootstrap)."""
    assert params.thresholds is not None
    detail: dict[str, Any] = {
        name: model_metrics(test.score(name), test.labels, test.fraud_type, operating[name], blocks)
        for name in MODELS
    }
    bands = blend_band_metrics(test.blend, test.labels, test.fraud_type, params.thresholds, blocks)
    detail["blend"].update(bands)
    cohort_points = {
        name: {
            "rows": int(mask.sum()),
            "frauds": int((mask & test.labels).sum()),
            **protocol.operating_point(
                test.blend, test.labels, operating["blend"], blocks, rows=mask
            ),
        }
        for name, mask in cohorts.items()
    }
    summary: dict[str, float] = {
        "test_rows": float(test.labels.size),
        "test_fraud_rate": float(np.mean(test.labels)),
        "threshold_high": params.thresholds.high,
        "threshold_medium": params.thresholds.medium,
        "supervised_platt_slope": params.xgb_weight,
        "anomaly_share": params.extra["anomaly_share"],
    }
    for name in MODELS:
        summary[f"{name}_roc_auc"] = detail[name]["roc_auc"]
        summary[f"{name}_pr_auc"] = detail[name]["pr_auc"]
        summary.update(protocol.flat_point(name, detail[name]["at_1pct_fpr"]))
    for key in ("high_precision", "high_recall", "medium_precision", "medium_recall"):
        r = bands[key]
        summary.update({f"blend_{key}": r["value"], f"blend_{key}_ci_low": r["ci_low"],
                        f"blend_{key}_ci_high": r["ci_high"]})  # fmt: skip
    for pattern, r in detail["blend"]["recall_by_type_at_1pct_fpr"].items():
        if r["n"]:
            key = f"blend_recall_at_1pct_fpr_{pattern}"
            summary.update({key: r["value"], f"{key}_ci_low": r["ci_low"],
                            f"{key}_ci_high": r["ci_high"]})  # fmt: skip
    for pattern, value in bands["recall_by_type_at_medium"].items():
        if value is not None:
            summary[f"blend_recall_at_medium_{pattern}"] = value
    for name, point in cohort_points.items():
        summary[f"{name}_rows"] = float(point["rows"])
        summary.update(
            protocol.flat_point(
                name, {k: point[k] for k in ("recall", "precision", "false_alarm_rate")}
            )
        )
    summary.update(protocol.loto_summary(loto))
    flagged = test.blend >= operating["blend"]
    summary.update(protocol.new_hire_false_alarm_ratio(flagged, test.labels, cohorts, blocks))
    summary = {k: float(v) for k, v in summary.items() if v is not None and math.isfinite(v)}
    return {
        "summary": summary,
        "models": detail,
        "thresholds": params.thresholds.to_dict(),
        "threshold_selection": threshold_info,
        "level_confusion": level_confusion(test.blend, test.fraud_type, params.thresholds),
        "cohorts": cohort_points,
        "leave_one_type_out": loto,
        "protocol": {
            "fitted_on": "train (forest, boosters, forest center/scale), valid (blend, "
            "every threshold, drift reference); test only counted",
            "intervals": f"95% percentile, {blocks.draws} resamples of test cashiers (blocks)",
            "cohorts": protocol.COHORTS_NOTE,
        },
    }


# ---------------------------------------------------------------- the evaluation


TRAIN_SCORE_SAMPLE = 50_000
"""Train rows (seeded sample) scored by the forest to fix the blend's center/scale."""


@dataclass(frozen=True)
class Scorers:
    """The models to evaluate, as functions of a feature matrix (rows x ``FEATURE_NAMES``)."""

    xgb_margin: Callable[[np.ndarray], np.ndarray]
    """Production booster: raw margin (log-odds)."""
    forest_score: Callable[[np.ndarray], np.ndarray]
    """Isolation forest: sklearn's ``score_samples`` (lower = more anomalous)."""
    fold_margins: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    """Fraud type -> margin of the booster trained without it (leave-one-type-out)."""
    anomaly_features: tuple[str, ...] = ()
    """The forest's input columns: the anomaly channel's reason codes rank them."""
    feature_names: tuple[str, ...] = ()
    """Names of the feature matrix's columns (``FEATURE_NAMES``)."""


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate_models`` found: the blend to ship, the report dict, the test scores."""

    params: BlendParams
    metrics: dict[str, Any]
    test: Scored


def evaluate_models(
    X: np.ndarray,
    subset: np.ndarray,
    labels: np.ndarray,
    fraud_type: np.ndarray,
    cashier: np.ndarray,
    scorers: Scorers,
    *,
    high_precision_target: float,
    medium_recall_target: float,
    label_cohorts: dict[str, np.ndarray] | None = None,
    feature_names: Sequence[str] = FEATURE_NAMES,
    train_sample: int = TRAIN_SCORE_SAMPLE,
    bootstrap_draws: int = protocol.BOOTSTRAP_DRAWS,
) -> Evaluation:
    """Score every subset; fit the blend and choose every threshold on valid; count on test.

    Args:
        X: Feature matrix, rows x ``FEATURE_NAMES``.
        subset: Each row's subset name (train / valid / test; ``holdout`` rows are ignored).
        labels: Each row's ``is_fraud``.
        fraud_type: Each row's fraud type (``"none"`` for legitimate rows).
        cashier: Each row's ``cashier_id`` (cohorts and bootstrap blocks).
        scorers: The models to evaluate.
        high_precision_target: Precision the High threshold must reach on valid.
        medium_recall_target: Recall the Medium threshold must reach on valid.
        label_cohorts: Label-side cohort columns (name -> each row's value), reported too.
        feature_names: The columns of ``X`` (the seed-contract view masks by name).
        train_sample: Train rows (seeded sample) that fix the forest score's center/scale.
        bootstrap_draws: Resamples behind each interval.
    """
    idx = {name: np.flatnonzero(subset == name) for name in ("train", "valid", "test")}
    train_idx = idx["train"]
    if train_idx.size > train_sample:
        rng = np.random.default_rng(0)
        train_idx = np.sort(rng.choice(train_idx, train_sample, replace=False))
    log.info(
        "scoring: %d train (sample), %d valid, %d test rows",
        train_idx.size,
        idx["valid"].size,
        idx["test"].size,
    )
    train_forest = scorers.forest_score(X[train_idx])
    forest_score = {s: scorers.forest_score(X[idx[s]]) for s in ("valid", "test")}
    margin = {s: scorers.xgb_margin(X[idx[s]]) for s in ("valid", "test")}
    valid_labels = labels[idx["valid"]]

    honest = train_idx[~np.asarray(labels[train_idx], dtype=bool)]
    params, threshold_info = thresholds.fit_channels(
        valid_margin=margin["valid"],
        valid_iforest_score=forest_score["valid"],
        valid_labels=valid_labels,
        train_iforest_score=train_forest,
        high_precision_target=high_precision_target,
        medium_recall_target=medium_recall_target,
        norms=thresholds.robust_norms(X[honest], scorers.anomaly_features, scorers.feature_names),
    )
    valid_risk = blend.risk_score(margin["valid"], forest_score["valid"], params)
    operating = {
        "xgb": threshold_at_fpr(margin["valid"], valid_labels),
        "iforest": threshold_at_fpr(-forest_score["valid"], valid_labels),
        "blend": params.extra["threshold_at_1pct_fpr"],
    }
    params = params.with_(
        reference_histogram=blend.score_histogram(valid_risk),
        extra={
            **params.extra,
            "high_precision_target": high_precision_target,
            "medium_recall_target": medium_recall_target,
            "reference": "valid-subset risk scores",
        },
    )
    test = Scored(
        labels=labels[idx["test"]],
        fraud_type=fraud_type[idx["test"]],
        xgb=margin["test"],
        iforest=-forest_score["test"],
        blend=blend.risk_score(margin["test"], forest_score["test"], params),
    )
    test_cashiers = np.asarray(cashier)[idx["test"]]
    blocks = protocol.Blocks(test_cashiers, draws=bootstrap_draws)
    fitted = np.asarray(cashier)[np.r_[idx["train"], idx["valid"]]]
    cohorts = protocol.cohort_masks(
        test_cashiers,
        np.unique(fitted.astype(str)),
        {k: np.asarray(v)[idx["test"]] for k, v in (label_cohorts or {}).items()},
        held_out_cashiers=np.unique(np.asarray(cashier)[subset == HOLDOUT].astype(str)),
    )
    loto = protocol.leave_one_type_out(
        fold_margins=scorers.fold_margins,
        X_valid=X[idx["valid"]],
        X_test=X[idx["test"]],
        valid_labels=valid_labels,
        valid_types=fraud_type[idx["valid"]],
        test_types=test.fraud_type,
        valid_forest=forest_score["valid"],
        test_forest=forest_score["test"],
        train_forest=train_forest,
        blocks=blocks,
        high_precision_target=high_precision_target,
        medium_recall_target=medium_recall_target,
    )
    if not scorers.fold_margins:
        log.warning("no fold boosters: no leave-one-type-out results")
    sup, anom = blend.channel_scores(margin["test"], forest_score["test"], params)
    by_channel = thresholds.channel_breakdown(sup, anom, test.labels, operating["blend"], blocks)
    unseen = cohorts.get("unseen_cashiers")
    seed_view = views.seed_contract_view(
        X[idx["test"]], feature_names, scorers, params, operating, test, blocks, unseen
    )
    metrics = summarize(
        test=test,
        params=params,
        threshold_info={**threshold_info, "threshold_at_1pct_fpr": operating},
        operating=operating,
        blocks=blocks,
        cohorts=cohorts,
        loto=loto,
    )
    metrics["channels_at_1pct_fpr"] = by_channel
    for k, v in by_channel.items():
        key = f"blend_{k}_at_1pct_fpr"
        metrics["summary"].update({key: v["value"], f"{key}_ci_low": v["ci_low"],
                                   f"{key}_ci_high": v["ci_high"]} if v["n"] else {})  # fmt: skip
    metrics[views.VIEW] = seed_view
    metrics["summary"].update(views.flat_summary(seed_view))
    metrics["summary"] = {k: v for k, v in metrics["summary"].items() if math.isfinite(v)}
    return Evaluation(params, metrics, test)


def json_safe(obj: Any) -> Any:
    """NaN -> None so the JSON is standard (json.dumps would write NaN)."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
