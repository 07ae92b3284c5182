"""Serving metrics: Prometheus (scraped /metrics) or CloudWatch EMF log lines (Lambda).

Names and buckets are the monitoring contract (alert rules and the Grafana dashboard use
them). With several uvicorn/gunicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start: prometheus-client then keeps values in per-process files and /metrics
aggregates them (``MultiProcessCollector``).

The PSI gauge compares the last ``window`` scores (a ring buffer) with the bundle's
reference histogram (``blend.psi``), recomputed every ``every`` scores so the hot path
only writes one float.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from components.contracts import blend as blend_mod
from serving.store.base import FALLBACK_REASONS

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
SCORE_BUCKETS = tuple(float(x) for x in range(0, 101, 5))
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ScoreWindow:
    """Ring buffer of the most recent scores and their PSI against a reference histogram."""

    def __init__(self, reference: Sequence[float] | None, size: int = 5000) -> None:
        self.reference = tuple(reference) if reference is not None else None
        self._buf = np.empty(size, dtype=np.float64)
        self._next = 0
        self._count = 0

    def add(self, score: float) -> None:
        self._buf[self._next] = score
        self._next = (self._next + 1) % self._buf.size
        self._count = min(self._count + 1, self._buf.size)

    def values(self) -> np.ndarray:
        return self._buf[: self._count].copy()

    def psi(self) -> float | None:
        """PSI of the window vs the reference; None without reference or scores."""
        if self.reference is None or self._count == 0:
            return None
        return blend_mod.psi(self.reference, self._buf[: self._count])


class ServingMetrics:
    """The metric set; one instance per app (own registry, so tests can build many apps)."""

    def __init__(
        self, *, psi_reference: Sequence[float] | None, psi_window: int = 5000, psi_every: int = 500
    ) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "pos_risk_requests",
            "HTTP requests by route, method and status.",
            ("route", "method", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "pos_risk_request_duration_seconds",
            "Request latency in seconds by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "pos_risk_predictions",
            "Scored transactions by risk level and store.",
            ("risk_level", "store_id"),
            registry=r,
        )
        self.score = Histogram(
            "pos_risk_score",
            "Distribution of 0-100 risk scores.",
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "pos_risk_model_info",
            "Model being served (value 1).",
            ("model_name", "model_version", "bundle_sha256"),
            registry=r,
            multiprocess_mode="max",
        )
        self.model_ready = Gauge(
            "pos_risk_model_ready",
            "1 when the model is loaded and self-tested.",
            registry=r,
            multiprocess_mode="min",
        )
        self.model_load_seconds = Gauge(
            "pos_risk_model_load_seconds",
            "Seconds spent loading and warming up the model.",
            registry=r,
            multiprocess_mode="max",
        )
        self.psi = Gauge(
            "pos_risk_score_psi",
            "PSI of recent scores vs the bundle's reference histogram.",
            registry=r,
            multiprocess_mode="max",
        )
        self.profile_lookups = Counter(
            "pos_risk_profile_lookups",
            "Profiles used for scoring by source (live store or the bundle's frozen profile).",
            ("source",),
            registry=r,
        )
        self.profile_fallbacks = Counter(
            "pos_risk_profile_fallbacks",
            "Requests scored with the frozen profile because the store failed, by reason.",
            ("reason",),
            registry=r,
        )
        self._lookup_children = {s: self.profile_lookups.labels(s) for s in ("live", "frozen")}
        # Every reason exported from the start (at 0): rate() and the dashboard need a series.
        self._fallback_children = {r: self.profile_fallbacks.labels(r) for r in FALLBACK_REASONS}
        self.window = ScoreWindow(psi_reference, psi_window)
        self._psi_every = psi_every
        self._since_psi = 0
        self._request_children: dict[tuple[str, str, int], object] = {}
        self._duration_children: dict[str, object] = {}
        self._prediction_children: dict[tuple[str, str], object] = {}

    # ------------------------------------------------------------------ recording

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.inc()
        hist = self._duration_children.get(route)
        if hist is None:
            hist = self._duration_children[route] = self.duration.labels(route)
        hist.observe(seconds)

    def observe_prediction(self, risk_level: str, store_label: str, score: float) -> None:
        key = (risk_level, store_label)
        child = self._prediction_children.get(key)
        if child is None:
            child = self._prediction_children[key] = self.predictions.labels(*key)
        child.inc()
        self.score.observe(score)
        self.window.add(score)
        self._since_psi += 1
        if self._since_psi >= self._psi_every:
            self.update_psi()

    def observe_profile(self, source: str, fallback_reason: str | None) -> None:
        """One profile lookup; ``fallback_reason`` set when the store failed."""
        self._lookup_children[source].inc()
        if fallback_reason is not None:
            child = self._fallback_children.get(fallback_reason)
            if child is None:
                child = self._fallback_children[fallback_reason] = self.profile_fallbacks.labels(
                    fallback_reason
                )
            child.inc()

    def update_psi(self) -> None:
        self._since_psi = 0
        value = self.window.psi()
        if value is not None:
            self.psi.set(value)

    def set_model(self, *, name: str, version: str, sha256: str, load_seconds: float) -> None:
        self.model_info.labels(name, version, sha256).set(1)
        self.model_load_seconds.set(load_seconds)

    def set_ready(self, ready: bool) -> None:
        self.model_ready.set(1 if ready else 0)

    def flush(self) -> None:
        """Nothing to flush for Prometheus (scraped); EMF subclass prints its blob."""

    # ------------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        """The /metrics body (aggregated over worker processes in multiprocess mode)."""
        self.update_psi()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class EmfMetrics(ServingMetrics):
    """Same metrics, also written as CloudWatch Embedded Metric Format lines on stdout.

    Lambda instances live too briefly to be scraped; CloudWatch Logs turns each EMF line
    into metrics. Uses aws-lambda-powertools' ``single_metric`` (one line per metric and
    dimension set), flushed by the request middleware at the end of each request.
    """

    def __init__(self, *, namespace: str, service: str = "pos-risk", **kwargs) -> None:
        super().__init__(**kwargs)
        from aws_lambda_powertools.metrics import MetricUnit

        self._count, self._seconds, self._none = (
            MetricUnit.Count,
            MetricUnit.Seconds,
            MetricUnit.NoUnit,
        )
        self._namespace = namespace
        self._service = service
        self._pending: list[tuple[str, object, float, dict[str, str]]] = []

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        super().observe_request(route, method, status, seconds)
        dims = {"route": route, "method": method, "status": str(status)}
        self._pending.append(("pos_risk_requests_total", self._count, 1.0, dims))
        self._pending.append(
            ("pos_risk_request_duration_seconds", self._seconds, seconds, {"route": route})
        )

    def observe_prediction(self, risk_level: str, store_label: str, score: float) -> None:
        super().observe_prediction(risk_level, store_label, score)
        dims = {"risk_level": risk_level, "store_id": store_label}
        self._pending.append(("pos_risk_predictions_total", self._count, 1.0, dims))
        self._pending.append(("pos_risk_score", self._none, score, {}))

    def observe_profile(self, source: str, fallback_reason: str | None) -> None:
        super().observe_profile(source, fallback_reason)
        if fallback_reason is not None:
            dims = {"reason": fallback_reason}
            self._pending.append(("pos_risk_profile_fallbacks_total", self._count, 1.0, dims))

    def flush(self) -> None:
        """Print one EMF line per dimension set collected since the last flush."""
        from aws_lambda_powertools.metrics import single_metric

        pending, self._pending = self._pending, []
        for name, unit, value, dims in pending:
            with single_metric(
                name=name, unit=unit, value=value, namespace=self._namespace
            ) as metric:
                metric.add_dimension(name="service", value=self._service)
                for key, val in dims.items():
                    metric.add_dimension(name=key, value=val)
