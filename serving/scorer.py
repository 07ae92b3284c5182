"""The fast scoring path: request -> features -> both forests -> two channels -> level and
reasons (the supervised channel's: top XGBoost attributions; the anomaly channel's: its
features furthest from their train-honest norm; ``channel``: which channel reached the level).

Single requests reuse preallocated buffers and make one compiled call for both models;
batches go through the vectorized kernels (rows in parallel). Features come from the shared
feature module (``features.raw_row`` + a prior + ``compute_features``), the prior from the
live profile store (``serving.store.LiveProfiles``) or the bundle's frozen ``ProfileIndex``;
the blend from ``blend``: the same code as training and evaluation, so there is no skew.

The models are the shared engine's (``components.contracts.engine``), the blend is
``blend.risk_score`` for batches and ``blend.risk_score_one`` (the same expression in scalar
arithmetic) for single requests, so single and batch scores are identical, not merely close.

Buffers are per ``Scorer`` and not locked: handlers call it from the event-loop thread
only (async handlers, no thread pool), one request at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from components.contracts import blend as blend_mod
from components.contracts import channels
from components.contracts import features as feats
from components.contracts.blend import BlendParams
from components.contracts.engine import IForestTrees, XGBTrees, score_pair_row
from components.contracts.engine.kernels import top_positive_batch

FROZEN = "frozen"
"""``profile_source`` of a score computed with the bundle's frozen profile."""


class PriorSource(Protocol):
    """Where a request's prior statistics come from (``serving.store.LiveProfiles``)."""

    def prior(self, request: Any, raw: np.ndarray) -> tuple[np.ndarray, str]: ...

    def prior_many(
        self, requests: Sequence[Any], raw: np.ndarray
    ) -> tuple[np.ndarray, list[str]]: ...


OTHER_STORE = "other"
"""Metric label for stores the bundle's profiles do not know (bounded label cardinality)."""


@dataclass(frozen=True)
class Models:
    """Everything scoring needs, loaded from a verified bundle."""

    xgb: XGBTrees
    forest: IForestTrees
    profiles: feats.ProfileIndex
    blend: BlendParams
    feature_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scored:
    """One scored transaction."""

    risk_score: float
    risk_level: str
    action: str
    reasons: list[tuple[str, float]]
    store_label: str
    profile_source: str = FROZEN
    channel: str | None = None
    """Which channel reached the risk level (``channels.fired``); None for Low."""
    anomaly_reasons: list[tuple[str, float]] = ()  # type: ignore[assignment]
    """Anomaly features furthest from their norm: (name, deviation in robust spreads)."""


ANOMALY_FIRED = frozenset({"anomaly", "both"})
"""Channels with which a response carries the anomaly channel's reason codes (explaining
what did not fire would cost every Low request ~5 us for reasons nobody reads)."""


class Scorer:
    """Scores requests (anything with ``get``/``[]`` over RAW_TRANSACTION field names)."""

    def __init__(self, models: Models, *, top_reasons: int = 3) -> None:
        self.models = models
        nf = len(models.feature_names)
        if models.xgb.num_features != nf or models.forest.num_features != nf:
            raise ValueError(
                f"models expect {models.xgb.num_features} (xgb) / {models.forest.num_features} "
                f"(forest) features, the bundle lists {nf}"
            )
        if models.blend.thresholds is None:
            raise ValueError("blend parameters carry no risk thresholds")
        self._blend = models.blend
        self._thresholds = models.blend.thresholds
        self._names = models.feature_names
        self._known_stores = frozenset(models.profiles.stores)
        self._raw = np.empty((1, len(feats.RAW_INPUTS)), dtype=np.float64)
        self._feat = np.empty((1, nf), dtype=np.float64)
        self._contrib = np.empty(nf + 1, dtype=np.float32)
        self._top = np.empty(max(top_reasons, 1), dtype=np.int64)
        self._k = top_reasons
        self._exp = np.empty(1, dtype=np.float64)
        anomaly = models.blend.anomaly
        self._norms = channels.norm_index(anomaly, self._names) if anomaly else None
        self._norm_rows = (
            None
            if self._norms is None
            else [(int(i), float(c), float(s)) for i, c, s in zip(*self._norms[:3], strict=True)]
        )

    def _fired(self, level: str, supervised: float, anomaly: float | None) -> str | None:
        if level == blend_mod.LOW or anomaly is None:
            return None
        cut = self._thresholds.high if level == blend_mod.HIGH else self._thresholds.medium
        return channels.fired(supervised, anomaly, cut)

    def _anomaly_reasons_one(self, x: np.ndarray) -> list[tuple[str, float]]:
        """``_anomaly_reasons`` of one row in scalar arithmetic (same values, same order: the
        same float64 operations, and both sorts are stable)."""
        if self._norm_rows is None:
            return []
        xs = x.tolist()
        d = [abs(xs[i] - c) / s for i, c, s in self._norm_rows]
        order = sorted(range(len(d)), key=d.__getitem__, reverse=True)[: self._k]
        names = self._norms[3]
        return [(names[j], d[j]) for j in order if d[j] > 0]

    def _anomaly_reasons(self, X: np.ndarray) -> list[list[tuple[str, float]]]:
        """Per row of ``X``: the top anomaly features by deviation from their norm (> 0)."""
        if self._norms is None:
            return [[] for _ in range(X.shape[0])]
        index, center, scale, names = self._norms
        dev = channels.deviations(X, index, center, scale)
        top = np.argsort(-dev, axis=1, kind="stable")[:, : self._k]
        return [
            [(names[j], float(dev[i, j])) for j in top[i] if dev[i, j] > 0]
            for i in range(X.shape[0])
        ]

    # ------------------------------------------------------------------ pieces

    def level(self, score: float) -> str:
        """Risk level of a score (``blend.risk_level``)."""
        return blend_mod.risk_level(score, self._thresholds)

    def store_label(self, cashier_id: str, store_id: str | None) -> str:
        store = self.models.profiles.store_for(cashier_id, store_id)
        return store if store in self._known_stores else OTHER_STORE

    def _prior(
        self, request: Any, raw: np.ndarray, profiles: PriorSource | None
    ) -> tuple[np.ndarray, str]:
        if profiles is None:
            frozen = self.models.profiles
            return frozen.prior_for(request["cashier_id"], request.get("store_id")), FROZEN
        return profiles.prior(request, raw)

    def features_one(
        self,
        request: Any,
        profiles: PriorSource | None = None,
        prior: tuple[np.ndarray, str] | None = None,
    ) -> tuple[np.ndarray, str]:
        """(1, F) features of one request (buffer reused by the next call) and their
        profile source. ``profiles`` None: the bundle's frozen profile, nothing folded;
        ``prior``: a (prior, source) the caller already took (``LiveProfiles.prior_async``)."""
        feats.raw_row(request, out=self._raw)
        if prior is None:
            prior = self._prior(request, self._raw, profiles)
        return feats.compute_features(self._raw, prior[0], out=self._feat), prior[1]

    def raw_many(self, requests: Sequence[Any]) -> np.ndarray:
        """(n, RAW_INPUTS) encoded rows of many requests."""
        raw = np.empty((len(requests), len(feats.RAW_INPUTS)), dtype=np.float64)
        for i, request in enumerate(requests):
            feats.raw_row(request, out=raw[i : i + 1])
        return raw

    def features_many(
        self,
        requests: Sequence[Any],
        profiles: PriorSource | None = None,
        taken: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """(n, F) features of many requests (priors taken and folded in order) and sources;
        ``taken``: (raw_many, priors, sources) the caller already took
        (``LiveProfiles.prior_many_async``)."""
        if taken is not None:
            raw, prior, sources = taken
        elif profiles is not None:
            raw = self.raw_many(requests)
            prior, sources = profiles.prior_many(requests, raw)
        else:
            raw = self.raw_many(requests)
            frozen = self.models.profiles
            prior = np.empty((len(requests), feats.PRIOR_WIDTH), dtype=np.float64)
            for i, request in enumerate(requests):
                prior[i] = frozen.prior_for(request["cashier_id"], request.get("store_id"))
            sources = [FROZEN] * len(requests)
        return feats.compute_features(raw, prior), sources

    def last_features(self) -> list[float]:
        """The feature vector of the last ``score_one`` call (the debug response field)."""
        return self._feat[0].tolist()

    # ------------------------------------------------------------------ scoring

    def score_one(
        self,
        request: Any,
        profiles: PriorSource | None = None,
        prior: tuple[np.ndarray, str] | None = None,
    ) -> Scored:
        """Score one request on the single-row fast path (``prior``: see ``features_one``)."""
        X, source = self.features_one(request, profiles, prior)
        x = X[0]
        margin, iforest_score, n_top = score_pair_row(
            x, self.models.xgb, self.models.forest, self._contrib, self._top
        )
        sup, anom = blend_mod.channel_scores_one(margin, iforest_score, self._blend, self._exp)
        score = sup if anom is None else max(sup, anom)  # == blend.risk_score_one
        if not math.isfinite(score):  # cannot happen with finite features; never return NaN
            raise ValueError("risk score is not finite")
        level = self.level(score)
        reasons = [
            (self._names[self._top[j]], float(self._contrib[self._top[j]]))
            for j in range(min(n_top, self._k))
        ]
        channel = self._fired(level, sup, anom)
        return Scored(
            risk_score=score,
            risk_level=level,
            action=blend_mod.action(level),
            reasons=reasons,
            store_label=self.store_label(request["cashier_id"], request.get("store_id")),
            profile_source=source,
            channel=channel,
            anomaly_reasons=self._anomaly_reasons_one(x) if channel in ANOMALY_FIRED else [],
        )

    def raw_scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorized model outputs for a feature matrix: margins, iforest scores, contribs."""
        margins, contribs = self.models.xgb.margins_contribs(X)
        return margins, self.models.forest.scores(X), contribs

    def score_many(
        self,
        requests: Sequence[Any],
        profiles: PriorSource | None = None,
        taken: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
    ) -> list[Scored]:
        """Score a batch on the vectorized path (``blend.risk_score`` itself; ``taken``: see
        ``features_many``)."""
        X, sources = self.features_many(requests, profiles, taken)
        margins, iforest_scores, contribs = self.raw_scores(X)
        sup, anom = blend_mod.channel_scores(margins, iforest_scores, self.models.blend)
        scores = sup if anom is None else np.maximum(sup, anom)  # == blend.risk_score
        if not np.all(np.isfinite(scores)):
            raise ValueError("risk score is not finite")
        top = np.empty((len(requests), max(self._k, 1)), dtype=np.int64)
        top_positive_batch(contribs, top)
        names = self._names
        levels = [self.level(float(v)) for v in scores]
        fired = [
            self._fired(lv, float(sup[i]), None if anom is None else float(anom[i]))
            for i, lv in enumerate(levels)
        ]
        explain = np.flatnonzero([c in ANOMALY_FIRED for c in fired])
        anomaly_reasons: list[list[tuple[str, float]]] = [[] for _ in requests]
        for i, r in zip(explain, self._anomaly_reasons(X[explain]), strict=True):
            anomaly_reasons[i] = r
        out = []
        for i, request in enumerate(requests):
            score = float(scores[i])
            level = levels[i]
            row_top = top[i]
            reasons = [(names[f], float(contribs[i, f])) for f in row_top[: self._k] if f >= 0]
            out.append(
                Scored(
                    risk_score=score,
                    risk_level=level,
                    action=blend_mod.action(level),
                    reasons=reasons,
                    store_label=self.store_label(request["cashier_id"], request.get("store_id")),
                    profile_source=sources[i],
                    channel=fired[i],
                    anomaly_reasons=anomaly_reasons[i],
                )
            )
        return out
