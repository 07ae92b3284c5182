"""Threshold rules, and the two-channel score's fit. Pure numpy, no I/O.

Everything here is chosen on VALID (the forest's center/scale on TRAIN); nothing sees TEST.

Single-score rules (on a 0-100 score, chosen on VALID, reported on TEST):

* **High** = the lowest score ``t`` at which ``precision(score >= t) >= high_precision_target``
  (so the High band is as large as it can be while still mostly fraud). If no threshold
  reaches the target, the threshold with the best precision is used and a warning logged.
* **Medium** = the highest score ``t`` at which ``recall(score >= t) >= medium_recall_target``
  (so "Medium or High" catches that share of fraud). If that is not below High, Medium is
  set just below High (the Medium band is then empty; logged).
* **at 1% FPR** = the lowest ``t`` at which at most 1% of the legitimate VALID rows score
  at or above it (``threshold_at_fpr``).

Two channels (``fit_channels``; the score itself: ``components.contracts.channels``):

1. supervised channel = Platt scaling of the booster margin on VALID; anomaly channel =
   the forest score standardized on TRAIN (median, IQR/1.349);
2. each operating point's false-alarm budget on VALID is that of the supervised channel
   alone under the rules above (1% for the 1%-FPR point; the valid false-alarm rate of the
   supervised-only High / Medium thresholds for the bands);
3. the anomaly channel takes ``share`` of each budget (its threshold: at most
   ``share * budget`` of the valid legitimate rows reach it), the supervised channel the
   rest (its threshold: the lowest at which the union of both alarms stays in budget);
4. ``share`` is the value in ``SHARE_GRID`` (0.20-0.35, the range the issue's offline
   trials found to keep known recall) with the best VALID recall at the 1%-FPR point, ties
   to the larger share. Only the labels given are used: leave-one-type-out folds pass
   valid without the held-out type, so a held-out type never steers the share.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.contracts import blend
from components.contracts.blend import BlendError, BlendParams, Thresholds
from components.contracts.channels import AnomalyChannel
from components.contracts.schemas import InputError

log = logging.getLogger(__name__)

SHARE_GRID = (0.20, 0.25, 0.30, 0.35)
"""Candidate shares of the false-alarm budget held by the anomaly channel."""

FPR_TARGET = 0.01
"""False-positive rate (on valid) that fixes the "at 1% FPR" operating threshold."""


def threshold_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = FPR_TARGET) -> float:
    """Lowest threshold ``t`` with ``mean(negatives >= t) <= fpr``.

    Ties are respected: a tied group of negatives is either all above or all below ``t``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    neg = np.sort(scores[~np.asarray(labels, dtype=bool)])[::-1]
    if neg.size == 0:
        return float(scores.min()) if scores.size else math.inf
    return _cut_for_count(neg, _allowed(fpr, neg.size))


def _allowed(fpr: float, negatives: int) -> int:
    return math.floor(fpr * negatives + 1e-9)


def _cut_for_count(neg_desc: np.ndarray, allowed: int) -> float:
    """Lowest threshold that at most ``allowed`` of ``neg_desc`` (sorted descending) reach."""
    if neg_desc.size == 0:
        return 100.0
    if allowed >= neg_desc.size:
        return float(neg_desc[-1])
    # Strictly above the (allowed+1)-th largest negative, so at most `allowed` negatives pass.
    return float(np.nextafter(neg_desc[allowed], np.inf))


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


# ---------------------------------------------------------------- two channels


def split_budget(
    supervised: np.ndarray, z: np.ndarray, labels: np.ndarray, fpr: float, share: float
) -> tuple[float, float]:
    """(supervised threshold, anomaly threshold) sharing a false-alarm budget ``fpr``: the
    anomaly channel gets ``share * fpr`` of the legitimate rows, the supervised channel the
    lowest threshold at which both together flag at most ``fpr`` of them."""
    y = np.asarray(labels, dtype=bool)
    z = np.asarray(z, dtype=np.float64)
    t_z = threshold_at_fpr(z, y, fpr * share)
    neg_z, neg_s = z[~y], np.asarray(supervised, dtype=np.float64)[~y]
    taken = neg_z >= t_z
    rest = np.sort(neg_s[~taken])[::-1]
    return _cut_for_count(rest, _allowed(fpr, neg_z.size) - int(taken.sum())), t_z


def union_recall(supervised, z, labels, t_s: float, t_z: float) -> float:
    """Share of the positive rows flagged by either channel."""
    flagged = (np.asarray(supervised) >= t_s) | (np.asarray(z) >= t_z)
    return recall_at(flagged.astype(np.float64), labels, 1.0)


def choose_share(supervised, z, labels, grid: Sequence[float] = SHARE_GRID) -> float:
    """The share with the best recall at the 1%-FPR point on these rows (ties: larger)."""
    recalls = [union_recall(supervised, z, labels, *split_budget(supervised, z, labels,
                                                                 FPR_TARGET, s)) for s in grid]  # fmt: skip
    best = max(recalls)
    return float(max(s for s, r in zip(grid, recalls, strict=True) if r >= best - 1e-12))


def _knots(points: dict[str, tuple[float, float]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots (z, score) from the operating points' (score, z) thresholds: sorted by score,
    equal scores merged (the larger z), z made non-decreasing (a higher band's anomaly
    threshold is never below a lower band's)."""
    merged: dict[float, float] = {}
    for s, z in points.values():
        merged[s] = max(z, merged.get(s, -math.inf))
    scores = sorted(merged)
    zs = np.maximum.accumulate([merged[s] for s in scores])
    return tuple(float(v) for v in zs), tuple(float(s) for s in scores)


def fit_channels(
    *,
    valid_margin: np.ndarray,
    valid_iforest_score: np.ndarray,
    valid_labels: np.ndarray,
    train_iforest_score: np.ndarray,
    high_precision_target: float,
    medium_recall_target: float,
    norms: tuple[tuple[str, float, float], ...] = (),
    share: float | None = None,
) -> tuple[BlendParams, dict[str, Any]]:
    """Fit the two-channel score on VALID (see the module docstring).

    Args:
        valid_margin: Booster margins on the valid rows used.
        valid_iforest_score: ``score_samples`` on the same rows.
        valid_labels: Their fraud labels.
        train_iforest_score: ``score_samples`` on train rows (anomaly center/scale).
        high_precision_target: Precision rule of the supervised channel's High band.
        medium_recall_target: Recall rule of the supervised channel's Medium band.
        norms: Per anomaly feature (name, center, scale) for the reason codes.
        share: Fixed anomaly share; None: ``choose_share``.

    Returns:
        Parameters with thresholds (``extra.threshold_at_1pct_fpr`` set) and how they
        were chosen.
    """
    y = np.asarray(valid_labels, dtype=bool)
    m = np.asarray(valid_margin, dtype=np.float64)
    center, scale = blend.robust_center_scale(-np.asarray(train_iforest_score, np.float64))
    a, c = blend.fit_logistic(m[:, None], y.astype(np.float64))
    if not a > 0:
        raise BlendError(f"booster margin does not rank fraud on valid (Platt slope {a:.3g})")
    params = BlendParams(xgb_weight=float(a), iforest_weight=0.0, intercept=float(c),
                         iforest_center=center, iforest_scale=scale)  # fmt: skip
    sup, _ = blend.channel_scores(m, valid_iforest_score, params)
    z = blend.iforest_z(valid_iforest_score, params)
    if share is None:
        share = choose_share(sup, z, y)
    alone, alone_info = choose_thresholds(
        sup, y, high_precision_target=high_precision_target,
        medium_recall_target=medium_recall_target,
    )  # fmt: skip
    neg = np.sort(sup[~y])
    budgets = {
        "medium": (neg.size - np.searchsorted(neg, alone.medium)) / max(neg.size, 1),
        "at_1pct_fpr": FPR_TARGET,
        "high": (neg.size - np.searchsorted(neg, alone.high)) / max(neg.size, 1),
    }
    points = {k: split_budget(sup, z, y, f, share) for k, f in budgets.items()}
    s_high = min(points["high"][0], 100.0)
    s_med = points["medium"][0]
    if s_med >= s_high:
        s_med = float(np.nextafter(s_high, -np.inf))
    points["high"], points["medium"] = (s_high, points["high"][1]), (
        s_med, points["medium"][1])  # fmt: skip
    knots_z, knots_score = _knots(points)
    channel = AnomalyChannel(knots_z=knots_z, knots_score=knots_score, share=share, norms=norms)
    params = params.with_(
        anomaly=channel,
        thresholds=Thresholds(high=s_high, medium=s_med),
        extra={"fit_rows": int(m.size), "fit_positives": int(y.sum()),
               "threshold_at_1pct_fpr": points["at_1pct_fpr"][0], "anomaly_share": share},
    )  # fmt: skip
    risk = blend.risk_score(m, valid_iforest_score, params)
    info: dict[str, Any] = {
        "rule": "two channels; budgets split on valid (components/evaluate/thresholds.py)",
        "anomaly_share": share,
        "false_alarm_budget": budgets,
        "supervised_alone": {**alone.to_dict(), **alone_info},
        "channel_thresholds": {
            k: {"supervised": s, "anomaly_z": z_} for k, (s, z_) in points.items()
        },
        "high_rule": f"supervised alone: {alone_info['high_rule']}; its valid false alarms "
        f"split {1 - share:.2f}/{share:.2f} between the supervised and anomaly channels",
        "medium_rule": f"supervised alone: {alone_info['medium_rule']}; its valid false alarms "
        f"split {1 - share:.2f}/{share:.2f} between the supervised and anomaly channels",
        "valid_rows": int(y.size),
        "valid_frauds": int(y.sum()),
    }
    for band, t in (("high", s_high), ("medium", s_med)):
        info[f"valid_{band}_precision"] = precision_at(risk, y, t)
        info[f"valid_{band}_recall"] = recall_at(risk, y, t)
    return params, info


def robust_norms(
    X: np.ndarray, names: Sequence[str], feature_names: Sequence[str]
) -> tuple[tuple[str, float, float], ...]:
    """(name, median, IQR/1.349) of each named column of ``X`` (columns: ``feature_names``),
    the norm the anomaly channel's reason codes measure distance from."""
    out = []
    for name in names:
        col = np.asarray(X[:, list(feature_names).index(name)], dtype=np.float64)
        col = col[np.isfinite(col)]
        out.append((name, *blend.robust_center_scale(col)) if col.size else (name, 0.0, 1.0))
    return tuple(out)


def channel_breakdown(
    supervised: np.ndarray, anomaly: np.ndarray, labels: np.ndarray, threshold: float, blocks
) -> dict[str, dict]:
    """At a score ``threshold``: the share of fraud rows flagged by the supervised channel
    only, the anomaly channel only, and both (each with interval), and the share of
    legitimate rows flagged by each channel (the false-alarm budget as spent)."""
    y = np.asarray(labels, dtype=bool)
    s, a = np.asarray(supervised) >= threshold, np.asarray(anomaly) >= threshold
    return {
        "recall_supervised_only": blocks.rate(s & ~a, y),
        "recall_anomaly_only": blocks.rate(a & ~s, y),
        "recall_both": blocks.rate(s & a, y),
        "false_alarm_rate_supervised": blocks.rate(s, ~y),
        "false_alarm_rate_anomaly": blocks.rate(a, ~y),
    }
