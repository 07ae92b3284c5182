"""Evaluate logic: metrics, threshold rules, the novel-pattern check. Pure numpy, no I/O.

``evaluate_models`` scores the feature table with both models (given as functions), fits the
blend and calls the rest; plots and reports are built in ``report.py`` from the dicts returned here.

Threshold rules (on the 0-100 blended score, chosen on the VALID subset, reported on TEST):

* **High** = the lowest score ``t`` at which ``precision(score >= t) >= high_precision_target``
  (so the High band is as large as it can be while still mostly fraud). If no threshold
  reaches the target, the threshold with the best precision is used and a warning logged.
* **Medium** = the highest score ``t`` at which ``recall(score >= t) >= medium_recall_target``
  (so "Medium or High" catches that share of fraud). If that is not below High, Medium is
  set just below High (the Medium band is then empty; logged).

"Recall at 1% FPR" uses the threshold at which at most 1% of the legitimate test
transactions score at or above it (computed on TEST itself: it is a ranking metric).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.contracts import blend
from components.contracts.blend import BlendParams, Thresholds
from components.contracts.layout import HISTORIC_SUBSETS as SUBSETS
from components.contracts.schemas import FRAUD_TYPES, RISK_LEVELS, InputError

log = logging.getLogger(__name__)

FPR_TARGET = 0.01
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


def threshold_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = FPR_TARGET) -> float:
    """Lowest threshold ``t`` with ``mean(negatives >= t) <= fpr``.

    Ties are respected: a tied group of negatives is either all above or all below ``t``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    neg = np.sort(scores[~np.asarray(labels, dtype=bool)])[::-1]
    if neg.size == 0:
        return float(scores.min()) if scores.size else math.inf
    allowed = math.floor(fpr * neg.size + 1e-9)
    if allowed >= neg.size:
        return float(neg[-1])
    # Strictly above the (allowed+1)-th largest negative, so at most `allowed` negatives pass.
    return float(np.nextafter(neg[allowed], np.inf))


def recall_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return math.nan
    return float(np.mean(np.asarray(scores)[labels] >= threshold))


def precision_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    flagged = np.asarray(scores) >= threshold
    if not flagged.any():
        return math.nan
    return float(np.mean(np.asarray(labels, dtype=bool)[flagged]))


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


def _group_ends(scores: np.ndarray, labels: np.ndarray):
    """Sorted (desc) distinct scores with cumulative TP and flagged counts at each."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = labels[order].astype(np.int64)
    tp = np.cumsum(y)
    n = np.arange(1, s.size + 1)
    last = np.r_[s[1:] != s[:-1], True]  # end of each tie group
    return s[last], tp[last], n[last]


def choose_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    high_precision_target: float,
    medium_recall_target: float,
) -> tuple[Thresholds, dict[str, Any]]:
    """Pick High / Medium thresholds on the 0-100 score (see the module docstring).

    Args:
        scores: Blended 0-100 scores of the VALID subset.
        labels: Its fraud labels.
        high_precision_target: Precision the High band must reach, in (0, 1].
        medium_recall_target: Recall "Medium or High" must reach, in (0, 1].

    Returns:
        The thresholds and a dict describing how they were chosen (valid precision/recall).
    """
    if not 0 < high_precision_target <= 1:
        raise InputError(f"--high-precision-target must be in (0, 1], got {high_precision_target}")
    if not 0 < medium_recall_target <= 1:
        raise InputError(f"--medium-recall-target must be in (0, 1], got {medium_recall_target}")
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    if positives == 0:
        raise InputError("valid subset has no fraud rows: cannot choose risk thresholds")
    values, tp, n = _group_ends(scores, labels)
    precision = tp / n
    recall = tp / positives
    info: dict[str, Any] = {"valid_rows": int(scores.size), "valid_frauds": positives}

    ok = np.flatnonzero(precision >= high_precision_target)
    if ok.size:
        i_high = int(ok[-1])  # values are descending: the last qualifying is the lowest score
        info["high_rule"] = "lowest score with valid precision >= target"
    else:
        i_high = int(np.argmax(precision))
        info["high_rule"] = "target unreachable: score with the best valid precision"
        log.warning(
            "no threshold reaches precision %.2f on valid (best %.3f); using the best",
            high_precision_target,
            precision[i_high],
        )
    high = float(min(max(values[i_high], 1e-6), 100.0))

    i_med = int(np.flatnonzero(recall >= medium_recall_target - 1e-12)[0])
    medium = float(max(values[i_med], 0.0))
    info["medium_rule"] = "highest score with valid recall >= target"
    if medium >= high:
        medium = float(np.nextafter(high, -np.inf)) if high > 0 else 0.0
        info["medium_rule"] = "recall target already met at High: Medium set just below High"
        log.warning("medium threshold would not be below high; Medium band is empty")
    thresholds = Thresholds(high=high, medium=medium)
    info.update(
        valid_high_precision=precision_at(scores, labels, high),
        valid_high_recall=recall_at(scores, labels, high),
        valid_medium_precision=precision_at(scores, labels, medium),
        valid_medium_recall=recall_at(scores, labels, medium),
    )
    return thresholds, info


# ---------------------------------------------------------------- reports


def model_metrics(scores: np.ndarray, labels: np.ndarray, fraud_type: np.ndarray) -> dict[str, Any]:
    """ROC-AUC, PR-AUC, recall at 1% FPR (overall and per fraud pattern) of one score."""
    t = threshold_at_fpr(scores, labels)
    return {
        "roc_auc": roc_auc(scores, labels),
        "pr_auc": pr_auc(scores, labels),
        "recall_at_1pct_fpr": recall_at(scores, labels, t),
        "precision_at_1pct_fpr": precision_at(scores, labels, t),
        "threshold_at_1pct_fpr": t,
        "recall_by_type_at_1pct_fpr": recall_by_type(scores, fraud_type, t),
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
    scores: np.ndarray, labels: np.ndarray, fraud_type: np.ndarray, thresholds: Thresholds
) -> dict[str, Any]:
    """Precision/recall of the High band and of "Medium or High", plus level shares."""
    levels = blend.risk_levels(scores, thresholds)
    return {
        "high_precision": precision_at(scores, labels, thresholds.high),
        "high_recall": recall_at(scores, labels, thresholds.high),
        "medium_precision": precision_at(scores, labels, thresholds.medium),
        "medium_recall": recall_at(scores, labels, thresholds.medium),
        "level_share": {lv: float(np.mean(levels == lv)) for lv in RISK_LEVELS},
        "recall_by_type_at_medium": recall_by_type(scores, fraud_type, thresholds.medium),
        "recall_by_type_at_high": recall_by_type(scores, fraud_type, thresholds.high),
    }


def novelty_check(
    *,
    novel_type: str,
    test: Scored,
    novelty_xgb_test: np.ndarray,
    novelty_blend_test: np.ndarray,
) -> dict[str, Any]:
    """How much of a fraud pattern never seen by XGBoost each score catches at 1% FPR.

    Args:
        novel_type: The fraud type withheld from the novelty booster's training.
        test: Test subset scored by the production models.
        novelty_xgb_test: Test margins of the booster trained without ``novel_type``.
        novelty_blend_test: Test 0-100 scores of the blend re-fitted with that booster.
    """
    mask = np.asarray(test.fraud_type) == novel_type
    if not mask.any():
        raise InputError(f"test subset has no rows of the novel fraud type {novel_type!r}")
    out: dict[str, Any] = {"fraud_type": novel_type, "test_rows": int(mask.sum())}
    for name, scores in (
        ("xgb_alone", novelty_xgb_test),
        ("iforest_alone", test.iforest),
        ("novelty_blend", novelty_blend_test),
        ("production_blend", test.blend),
    ):
        t = threshold_at_fpr(scores, test.labels)
        out[f"{name}_recall_at_1pct_fpr"] = float(np.mean(np.asarray(scores)[mask] >= t))
    out["blend_gain"] = (
        out["novelty_blend_recall_at_1pct_fpr"] - out["xgb_alone_recall_at_1pct_fpr"]
    )
    return out


def roc_points(scores: np.ndarray, labels: np.ndarray, max_points: int = 200):
    """(threshold, tpr, fpr) points for KFP's ClassificationMetrics, thinned to ``max_points``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(np.asarray(labels, dtype=bool), scores)
    thr = np.clip(thr, 0.0, 100.0)  # sklearn's first threshold is +inf
    idx = np.unique(np.linspace(0, fpr.size - 1, min(max_points, fpr.size)).round().astype(int))
    return [(float(thr[i]), float(tpr[i]), float(fpr[i])) for i in idx]


def flagged_confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> list[list[int]]:
    """2x2 confusion matrix [[TN, FP], [FN, TP]] of ``score >= threshold`` vs truth."""
    flagged = np.asarray(scores) >= threshold
    y = np.asarray(labels, dtype=bool)
    return [
        [int(np.sum(~y & ~flagged)), int(np.sum(~y & flagged))],
        [int(np.sum(y & ~flagged)), int(np.sum(y & flagged))],
    ]


def summarize(
    *,
    test: Scored,
    params: BlendParams,
    threshold_info: dict[str, Any],
    novelty: dict[str, Any] | None,
) -> dict[str, Any]:
    """The full ``metrics.json``: per-model metrics, band metrics, novelty, flat summary."""
    assert params.thresholds is not None
    detail: dict[str, Any] = {
        name: model_metrics(test.score(name), test.labels, test.fraud_type) for name in MODELS
    }
    bands = blend_band_metrics(test.blend, test.labels, test.fraud_type, params.thresholds)
    detail["blend"].update(bands)
    summary: dict[str, float] = {
        "test_rows": float(test.labels.size),
        "test_fraud_rate": float(np.mean(test.labels)),
        "threshold_high": params.thresholds.high,
        "threshold_medium": params.thresholds.medium,
        "blend_weight_xgb": params.xgb_weight,
        "blend_weight_iforest": params.iforest_weight,
    }
    for name in MODELS:
        for key in ("roc_auc", "pr_auc", "recall_at_1pct_fpr"):
            summary[f"{name}_{key}"] = detail[name][key]
    for key in ("high_precision", "high_recall", "medium_precision", "medium_recall"):
        summary[f"blend_{key}"] = bands[key]
    for pattern, value in detail["blend"]["recall_by_type_at_1pct_fpr"].items():
        if value is not None:
            summary[f"blend_recall_at_1pct_fpr_{pattern}"] = value
    for pattern, value in bands["recall_by_type_at_medium"].items():
        if value is not None:
            summary[f"blend_recall_at_medium_{pattern}"] = value
    if novelty:
        for key in ("xgb_alone", "iforest_alone", "novelty_blend", "production_blend"):
            summary[f"novel_{key}_recall_at_1pct_fpr"] = novelty[f"{key}_recall_at_1pct_fpr"]
    summary = {k: float(v) for k, v in summary.items() if v is not None and math.isfinite(v)}
    return {
        "summary": summary,
        "models": detail,
        "thresholds": params.thresholds.to_dict(),
        "threshold_selection": threshold_info,
        "level_confusion": level_confusion(test.blend, test.fraud_type, params.thresholds),
        "novelty": novelty,
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
    novelty_margin: Callable[[np.ndarray], np.ndarray] | None = None
    """The booster trained without ``novel_type``; None skips the novel-pattern check."""


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
    scorers: Scorers,
    *,
    high_precision_target: float,
    medium_recall_target: float,
    novel_type: str,
    train_sample: int = TRAIN_SCORE_SAMPLE,
) -> Evaluation:
    """Score every subset, fit the blend on valid, choose thresholds on valid, report on test.

    Args:
        X: Feature matrix, rows x ``FEATURE_NAMES``.
        subset: Each row's subset name (train / valid / test).
        labels: Each row's ``is_fraud``.
        fraud_type: Each row's fraud type (``"none"`` for legitimate rows).
        scorers: The models to evaluate.
        high_precision_target: Precision the High threshold must reach on valid.
        medium_recall_target: Recall the Medium threshold must reach on valid.
        novel_type: Fraud type the novelty booster never saw.
        train_sample: Train rows (seeded sample) that fix the forest score's center/scale.
    """
    idx = {name: np.flatnonzero(subset == name) for name in SUBSETS}
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

    params = blend.fit_blend(
        valid_margin=margin["valid"],
        valid_iforest_score=forest_score["valid"],
        valid_labels=valid_labels,
        train_iforest_score=train_forest,
    )
    thresholds, threshold_info = choose_thresholds(
        blend.risk_score(margin["valid"], forest_score["valid"], params),
        valid_labels,
        high_precision_target=high_precision_target,
        medium_recall_target=medium_recall_target,
    )
    test_risk = blend.risk_score(margin["test"], forest_score["test"], params)
    params = params.with_(
        thresholds=thresholds,
        reference_histogram=blend.score_histogram(test_risk),
        extra={
            **params.extra,
            "high_precision_target": high_precision_target,
            "medium_recall_target": medium_recall_target,
            "reference": "test-subset risk scores",
        },
    )
    test = Scored(
        labels=labels[idx["test"]],
        fraud_type=fraud_type[idx["test"]],
        xgb=margin["test"],
        iforest=-forest_score["test"],
        blend=test_risk,
    )

    novelty = None
    if scorers.novelty_margin is None:
        log.warning("no novelty booster: skipping the novel-pattern check")
    elif not np.any(test.fraud_type == novel_type):
        log.warning("no %r rows in the test subset: skipping the novel-pattern check", novel_type)
    else:
        nov_margin = {s: scorers.novelty_margin(X[idx[s]]) for s in ("valid", "test")}
        nov_params = blend.fit_blend(
            valid_margin=nov_margin["valid"],
            valid_iforest_score=forest_score["valid"],
            valid_labels=valid_labels,
            train_iforest_score=train_forest,
        )
        novelty = novelty_check(
            novel_type=novel_type,
            test=test,
            novelty_xgb_test=nov_margin["test"],
            novelty_blend_test=blend.risk_score(
                nov_margin["test"], forest_score["test"], nov_params
            ),
        )
        novelty["novelty_blend_weights"] = {
            "xgb_weight": nov_params.xgb_weight,
            "iforest_weight": nov_params.iforest_weight,
        }

    metrics = summarize(test=test, params=params, threshold_info=threshold_info, novelty=novelty)
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
