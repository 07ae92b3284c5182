"""The one risk score: XGBoost margin + isolation-forest score -> 0-100 risk score.

Used by ``evaluate`` (to fit and report it), by ``register``'s MLflow pyfunc, and by
serving. Pure numpy, no I/O, no pickles: the parameters live in ``blend.json`` as plain
numbers (``BlendParams.to_dict`` / ``BlendParams.from_dict``).

Two channels (``blend_version`` 2, what ``evaluate`` fits): ``BlendParams.anomaly`` is set,
``iforest_weight`` is 0 and the score is the larger of the two channel scores::

    supervised = 100 * sigmoid(a * xgb_margin + c)        # Platt-calibrated booster
    anomaly    = channels.anomaly_score(iforest_z)        # knots: channel thresholds
    risk       = max(supervised, anomaly)

so a score crosses High (Medium, the 1%-FPR point) exactly when either channel crosses its
own threshold for it (``components.contracts.channels``). Why: a logistic blend fitted on
labelled types puts almost no weight on the forest, which then never flags a pattern no
label showed (issue 13 item 4: leave-one-type-out recall 0.00 for every type).

One logistic blend (``blend_version`` 1 bundles, still read and scored as they were)::

    iforest_z = (-iforest_score - center) / scale
    risk      = 100 * sigmoid(a * xgb_margin + b * iforest_z + c)

* ``iforest_score`` is sklearn's ``score_samples`` convention (higher = more normal), so
  ``-iforest_score`` is the anomaly score; ``center`` / ``scale`` are its median and robust
  spread (IQR / 1.349) on the TRAIN subset, so ``iforest_z`` is on a unit scale before the
  weights are fitted.
* ``a, b, c`` are a logistic regression of the label on ``(xgb_margin, iforest_z)`` fitted
  on the VALID subset (``fit_blend``; Newton/IRLS with a tiny L2 penalty on ``a, b``). A
  logistic regression on the margin alone is exactly Platt scaling; adding ``iforest_z`` as
  a second input lets the data decide how much the unsupervised model adds, and the output
  is a calibrated probability of fraud. The 0-100 score is that probability in percent.

Risk levels come from two thresholds on the 0-100 score (``Thresholds``): ``score >= high``
is High Risk, ``score >= medium`` Medium Risk, else Low Risk; each level maps to an action
via ``schemas.ACTIONS``. ``psi`` compares recent scores with the reference histogram of
valid-period scores stored in ``blend.json`` (bins 0, 5, ..., 100).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from components.contracts.channels import (
    AnomalyChannel,
    ChannelError,
    anomaly_score,
    anomaly_score_one,
)
from components.contracts.schemas import ACTIONS, RISK_LEVELS, InputError

BLEND_VERSION = 2
"""Version of the ``blend.json`` layout written (2: two channels); bumped on incompatible
change. ``from_dict`` reads every version in ``READABLE_VERSIONS``."""
READABLE_VERSIONS = (1, 2)

SCORE_BINS = tuple(float(x) for x in range(0, 101, 5))
"""Edges of the 0-100 score histogram (20 bins) used for the PSI reference."""

LOW, MEDIUM, HIGH = RISK_LEVELS


class BlendError(InputError):
    """Blend parameters are invalid or inputs do not fit them."""


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Risk-level cut-offs on the 0-100 score (``medium < high``)."""

    high: float
    """Scores at or above this are High Risk."""
    medium: float
    """Scores at or above this (and below ``high``) are Medium Risk."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.medium < self.high <= 100.0):
            raise BlendError(
                f"thresholds must satisfy 0 <= medium < high <= 100, got "
                f"medium={self.medium}, high={self.high}"
            )

    def to_dict(self) -> dict[str, float]:
        return {"high": float(self.high), "medium": float(self.medium)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        try:
            return cls(high=float(data["high"]), medium=float(data["medium"]))
        except (KeyError, TypeError) as exc:
            raise BlendError(f"thresholds need numeric 'high' and 'medium': {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class BlendParams:
    """Everything needed to turn the two model outputs into a risk score and level."""

    xgb_weight: float
    """``a``: weight of the XGBoost margin (log-odds)."""
    iforest_weight: float
    """``b``: weight of the standardized isolation-forest anomaly score."""
    intercept: float
    """``c``: intercept of the logistic blend."""
    iforest_center: float
    """Median of ``-score_samples`` on the train subset."""
    iforest_scale: float
    """Robust spread (IQR / 1.349) of ``-score_samples`` on the train subset; > 0."""
    thresholds: Thresholds | None = None
    """Risk-level cut-offs; None until ``evaluate`` has chosen them."""
    reference_histogram: tuple[float, ...] | None = None
    """Fraction of valid-period scores per ``SCORE_BINS`` bin (sums to 1), for PSI."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (fit sizes, targets); carried through JSON unchanged."""
    anomaly: AnomalyChannel | None = None
    """The anomaly channel (two-channel score); None: one logistic blend (version 1)."""

    def __post_init__(self) -> None:
        for name in ("xgb_weight", "iforest_weight", "intercept", "iforest_center"):
            if not math.isfinite(getattr(self, name)):
                raise BlendError(f"blend parameter {name} is not finite")
        if not (math.isfinite(self.iforest_scale) and self.iforest_scale > 0):
            raise BlendError(f"blend parameter iforest_scale must be > 0, got {self.iforest_scale}")
        if self.reference_histogram is not None and (
            len(self.reference_histogram) != len(SCORE_BINS) - 1
        ):
            raise BlendError(
                f"reference_histogram needs {len(SCORE_BINS) - 1} bins, "
                f"got {len(self.reference_histogram)}"
            )

    def with_(self, **changes: Any) -> BlendParams:
        """Copy with fields replaced (e.g. thresholds after they are chosen)."""
        from dataclasses import replace

        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of ``blend.json``)."""
        two = self.anomaly is not None
        return {
            "blend_version": BLEND_VERSION if two else 1,
            "formula": "max(100 * sigmoid(a * xgb_margin + c), anomaly_score((-iforest_score"
            " - center) / scale))"
            if two
            else "100 * sigmoid(a * xgb_margin + b * (-iforest_score - center) / scale + c)",
            "xgb_weight": float(self.xgb_weight),
            "iforest_weight": float(self.iforest_weight),
            "intercept": float(self.intercept),
            "iforest_center": float(self.iforest_center),
            "iforest_scale": float(self.iforest_scale),
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
            "reference_histogram": {
                "bins": list(SCORE_BINS),
                "fractions": [float(x) for x in self.reference_histogram],
            }
            if self.reference_histogram is not None
            else None,
            "extra": dict(self.extra),
            **({"anomaly_channel": self.anomaly.to_dict()} if two else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlendParams:
        """Parse ``blend.json`` content; raises ``BlendError`` naming the bad field."""
        version = data.get("blend_version", 1)
        if version not in READABLE_VERSIONS:
            raise BlendError(
                f"blend_version {version} not supported (this code reads {READABLE_VERSIONS})"
            )
        if version >= 2 and not data.get("anomaly_channel"):
            raise BlendError(f"blend_version {version} needs an 'anomaly_channel'")
        try:
            thresholds = data.get("thresholds")
            hist = data.get("reference_histogram")
            if hist is not None:
                if [float(b) for b in hist.get("bins", SCORE_BINS)] != list(SCORE_BINS):
                    raise BlendError("reference_histogram bins differ from SCORE_BINS")
                hist = tuple(float(x) for x in hist["fractions"])
            return cls(
                xgb_weight=float(data["xgb_weight"]),
                iforest_weight=float(data["iforest_weight"]),
                intercept=float(data["intercept"]),
                iforest_center=float(data["iforest_center"]),
                iforest_scale=float(data["iforest_scale"]),
                thresholds=Thresholds.from_dict(thresholds) if thresholds else None,
                reference_histogram=hist,
                extra=dict(data.get("extra") or {}),
                anomaly=AnomalyChannel.from_dict(data["anomaly_channel"]) if version >= 2 else None,
            )
        except KeyError as exc:
            raise BlendError(f"blend parameters miss field {exc}") from exc
        except ChannelError as exc:
            raise BlendError(str(exc)) from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BlendError):
                raise
            raise BlendError(f"blend parameters malformed: {exc}") from exc


# ---------------------------------------------------------------- scoring


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Stable for large |z|: never exponentiates a positive number.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _logit(m, s, params: BlendParams):
    # One expression for arrays and Python floats: the same float64 operations in the same
    # order, so risk_score and risk_score_one agree bit for bit.
    return params.xgb_weight * m + params.iforest_weight * _z(s, params) + params.intercept


def _z(s, params: BlendParams):
    return (-s - params.iforest_center) / params.iforest_scale


def iforest_z(iforest_score: np.ndarray, params: BlendParams) -> np.ndarray:
    """Standardized anomaly score: ``(-iforest_score - center) / scale``."""
    return _z(np.asarray(iforest_score, dtype=np.float64), params)


def blend_logit(
    xgb_margin: np.ndarray, iforest_score: np.ndarray, params: BlendParams
) -> np.ndarray:
    """Log-odds of fraud: ``a * xgb_margin + b * iforest_z + c``."""
    m = np.asarray(xgb_margin, dtype=np.float64)
    return _logit(m, np.asarray(iforest_score, dtype=np.float64), params)


def channel_scores(
    xgb_margin: np.ndarray, iforest_score: np.ndarray, params: BlendParams
) -> tuple[np.ndarray, np.ndarray | None]:
    """The two channels' 0-100 scores, elementwise: (supervised, anomaly); the risk score is
    their maximum. A one-blend (version 1) ``params``: (the blend's score, None)."""
    m = np.asarray(xgb_margin, dtype=np.float64)
    s = np.asarray(iforest_score, dtype=np.float64)
    if m.shape != s.shape:
        raise BlendError(f"xgb_margin shape {m.shape} != iforest_score shape {s.shape}")
    supervised = 100.0 * _sigmoid(blend_logit(m, s, params))
    if params.anomaly is None:
        return supervised, None
    return supervised, anomaly_score(_z(s, params), params.anomaly)


def risk_score(
    xgb_margin: np.ndarray, iforest_score: np.ndarray, params: BlendParams
) -> np.ndarray:
    """0-100 risk score, elementwise: the larger channel score (``channel_scores``); with a
    one-blend (version 1) ``params``, the calibrated blend (percent probability of fraud).

    Args:
        xgb_margin: XGBoost raw margins (``output_margin=True``), shape (n,).
        iforest_score: Isolation-forest ``score_samples`` values (higher = more normal), (n,).
        params: Fitted blend parameters.

    Returns:
        float64 array of shape (n,) in [0, 100].
    """
    supervised, anomaly = channel_scores(xgb_margin, iforest_score, params)
    return supervised if anomaly is None else np.maximum(supervised, anomaly)


def channel_scores_one(
    xgb_margin: float, iforest_score: float, params: BlendParams, buf: np.ndarray
) -> tuple[float, float | None]:
    """``channel_scores`` of one row in scalar arithmetic, bit-identical to the batch result
    (``buf``: see ``risk_score_one``)."""
    supervised = risk_score_one(xgb_margin, iforest_score, params, buf, blend_only=True)
    if params.anomaly is None:
        return supervised, None
    return supervised, anomaly_score_one(_z(iforest_score, params), params.anomaly, buf)


def risk_score_one(
    xgb_margin: float,
    iforest_score: float,
    params: BlendParams,
    buf: np.ndarray,
    *,
    blend_only: bool = False,
) -> float:
    """``risk_score`` of one row in scalar arithmetic, bit-identical to the batch result
    (``blend_only``: the supervised channel / version-1 blend alone).

    The single-request path: numpy's array machinery would cost ~20 us for one row. The
    logit is the same expression (``_logit``), the exponential numpy's own ``exp`` (into
    ``buf``, a (1,) float64 scratch array the caller owns), the sigmoid ``_sigmoid``'s
    branches.
    """
    logit = _logit(xgb_margin, iforest_score, params)
    buf[0] = -abs(logit)
    np.exp(buf, out=buf)
    e = float(buf[0])
    supervised = 100.0 * (1.0 / (1.0 + e) if logit >= 0 else e / (1.0 + e))
    if blend_only or params.anomaly is None:
        return supervised
    return max(supervised, anomaly_score_one(_z(iforest_score, params), params.anomaly, buf))


def _cuts(thresholds: Thresholds | Mapping[str, float]) -> tuple[float, float]:
    if isinstance(thresholds, Thresholds):
        return thresholds.high, thresholds.medium
    return float(thresholds["high"]), float(thresholds["medium"])


def risk_level(score: float, thresholds: Thresholds | Mapping[str, float]) -> str:
    """Risk level of one 0-100 score: High (>= high), Medium (>= medium) or Low."""
    high, medium = _cuts(thresholds)
    if score >= high:
        return HIGH
    if score >= medium:
        return MEDIUM
    return LOW


def risk_levels(scores: np.ndarray, thresholds: Thresholds | Mapping[str, float]) -> np.ndarray:
    """Vectorized ``risk_level``: an object array of level names."""
    high, medium = _cuts(thresholds)
    s = np.asarray(scores, dtype=np.float64)
    idx = (s >= medium).astype(np.int8) + (s >= high).astype(np.int8)
    return np.asarray(RISK_LEVELS, dtype=object)[idx]


def action(level: str) -> str:
    """The operator action for a risk level (``schemas.ACTIONS``)."""
    try:
        return ACTIONS[level]
    except KeyError as exc:
        raise BlendError(f"unknown risk level {level!r}") from exc


# ---------------------------------------------------------------- drift


def score_histogram(scores: np.ndarray) -> tuple[float, ...]:
    """Fraction of ``scores`` in each ``SCORE_BINS`` bin (the last bin includes 100)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 100.0)
    if s.size == 0:
        raise BlendError("cannot build a score histogram from no scores")
    counts, _ = np.histogram(s, bins=np.asarray(SCORE_BINS))
    return tuple(float(c) for c in counts / counts.sum())


def psi(
    reference_hist: Sequence[float], current_scores: np.ndarray, *, epsilon: float = 1e-4
) -> float:
    """Population stability index of ``current_scores`` against a reference histogram.

    ``PSI = sum((cur - ref) * ln(cur / ref))`` over the ``SCORE_BINS`` bins, with each
    fraction floored at ``epsilon`` so empty bins do not give infinity. Rule of thumb:
    < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.

    Args:
        reference_hist: Reference fractions per bin (``BlendParams.reference_histogram``).
        current_scores: Recent 0-100 scores.
        epsilon: Floor for empty bins.
    """
    ref = np.maximum(np.asarray(reference_hist, dtype=np.float64), epsilon)
    if ref.shape != (len(SCORE_BINS) - 1,):
        raise BlendError(f"reference histogram needs {len(SCORE_BINS) - 1} bins, got {ref.shape}")
    cur = np.maximum(np.asarray(score_histogram(current_scores)), epsilon)
    ref = ref / ref.sum()
    cur = cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


# ---------------------------------------------------------------- fitting


def robust_center_scale(anomaly: np.ndarray) -> tuple[float, float]:
    """Median and IQR/1.349 of an anomaly score (falls back to std, then 1.0, if degenerate)."""
    a = np.asarray(anomaly, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise BlendError("isolation-forest scores are empty or not finite")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    scale = (q3 - q1) / 1.349
    if not scale > 1e-12:
        scale = float(a.std())
    if not scale > 1e-12:
        scale = 1.0
    return float(med), float(scale)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1e-4, max_iter: int = 100, tol: float = 1e-10
) -> np.ndarray:
    """Logistic regression by damped Newton (IRLS + line search); returns ``[w_1..w_k, c]``.

    ``l2`` penalizes the weights (not the intercept) and keeps the fit finite when the
    classes are perfectly separable. Deterministic; k is tiny here (2), so each Newton
    step is a 3x3 solve.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise BlendError(f"fit_logistic: x {x.shape} and y {y.shape} do not match")
    if y.min() == y.max():
        raise BlendError("fit_logistic: labels contain a single class; cannot fit the blend")
    n, k = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(k + 1, l2 * n)
    penalty[-1] = 0.0

    def loss(w: np.ndarray) -> float:
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * w * w))

    w = np.zeros(k + 1)
    prior = y.mean()
    w[-1] = math.log(prior / (1 - prior))
    current = loss(w)
    for _ in range(max_iter):
        p = _sigmoid(design @ w)
        grad = design.T @ (p - y) + penalty * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-9 * np.eye(k + 1), grad)
        # Backtracking line search (Armijo): plain Newton overshoots on large margins.
        t, decrease = 1.0, float(grad @ step)
        while t > 1e-10:
            candidate = w - t * step
            new = loss(candidate)
            if new <= current - 1e-4 * t * decrease:
                break
            t *= 0.5
        else:
            break
        w, previous, current = candidate, current, new
        if np.max(np.abs(t * step)) < tol or previous - current < tol * max(1.0, abs(current)):
            break
    if not np.all(np.isfinite(w)):
        raise BlendError("fit_logistic diverged")
    return w


def fit_blend(
    *,
    valid_margin: np.ndarray,
    valid_iforest_score: np.ndarray,
    valid_labels: np.ndarray,
    train_iforest_score: np.ndarray,
    l2: float = 1e-4,
) -> BlendParams:
    """Fit the blend: standardize on train scores, logistic regression on valid.

    Args:
        valid_margin: XGBoost margins on the valid subset.
        valid_iforest_score: ``score_samples`` on the valid subset.
        valid_labels: 0/1 (or bool) fraud labels of the valid subset.
        train_iforest_score: ``score_samples`` on the train subset (for center/scale).
        l2: Ridge penalty per row on the two weights.

    Returns:
        ``BlendParams`` without thresholds / reference histogram.
    """
    center, scale = robust_center_scale(-np.asarray(train_iforest_score, dtype=np.float64))
    probe = BlendParams(
        xgb_weight=0.0,
        iforest_weight=0.0,
        intercept=0.0,
        iforest_center=center,
        iforest_scale=scale,
    )
    m = np.asarray(valid_margin, dtype=np.float64)
    z = iforest_z(valid_iforest_score, probe)
    a, b, c = fit_logistic(
        np.column_stack([m, z]), np.asarray(valid_labels, dtype=np.float64), l2=l2
    )
    return probe.with_(
        xgb_weight=float(a),
        iforest_weight=float(b),
        intercept=float(c),
        extra={"fit_rows": int(m.size), "fit_positives": int(np.sum(valid_labels))},
    )
