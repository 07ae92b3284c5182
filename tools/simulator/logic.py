"""Simulator pure logic: pacing, backoff, percentiles, online quality, the API Gateway event
shape and the report text (no I/O; unit-tested)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.contracts.schemas import FRAUD_TYPES, RISK_LEVELS

PREDICT_PATH = "/v1/predict"
LATENCY_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
MAX_CONCURRENCY = 64
"""Upper bound on worker threads: a simulator, not a load-testing tool."""
FLAGGED_LEVELS = ("Medium Risk", "High Risk")
"""Risk levels that trigger an action; quality is reported for "at or above" each."""


class SimulatorError(ValueError):
    """A bad simulator input (file, flag or configuration); the message names it."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """How to replay the stream. Every run is bounded by ``max_requests`` and ``duration_s``."""

    rate: float | None = 20.0
    """Target requests per second over all workers; None sends as fast as possible."""
    concurrency: int = 4
    """Worker threads sending requests."""
    max_requests: int = 1000
    """Stop after this many transactions (also bounded by the stream length)."""
    duration_s: float = 60.0
    """Stop starting new requests after this many seconds."""
    timeout_s: float = 5.0
    """Per-attempt request timeout."""
    max_retries: int = 3
    """Retries after a 5xx answer or a connection error (0 = send once)."""
    backoff_base_s: float = 0.05
    """First retry delay; doubles with every further retry."""
    backoff_max_s: float = 2.0
    """Cap on one retry delay."""

    def __post_init__(self) -> None:
        if self.rate is not None and not (self.rate > 0 and np.isfinite(self.rate)):
            raise SimulatorError(f"rate must be > 0 requests/s (or None), got {self.rate}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise SimulatorError(
                f"concurrency must be in 1..{MAX_CONCURRENCY}, got {self.concurrency}"
            )
        if self.max_requests < 1:
            raise SimulatorError(f"max_requests must be >= 1, got {self.max_requests}")
        if not (0 < self.duration_s < float("inf")):
            raise SimulatorError(
                f"duration must be a positive number of seconds, got {self.duration_s}"
            )
        if self.timeout_s <= 0:
            raise SimulatorError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if self.max_retries < 0:
            raise SimulatorError(f"retries must be >= 0, got {self.max_retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise SimulatorError(
                f"backoff must satisfy 0 <= base <= max, got base={self.backoff_base_s} "
                f"max={self.backoff_max_s}"
            )


# ---------------------------------------------------------------- pure logic


def due_offset(index: int, rate: float | None) -> float:
    """Seconds after the start at which request ``index`` (0-based) is due.

    Requests are evenly spaced at ``rate`` per second, whatever worker sends them, so the
    aggregate rate stays on target even when single requests are slow.
    """
    if rate is None:
        return 0.0
    return index / rate


def backoff_delay(retry: int, base_s: float, max_s: float) -> float:
    """Delay before retry number ``retry`` (1-based): ``base * 2**(retry-1)``, capped."""
    if retry < 1:
        raise ValueError(f"retry number starts at 1, got {retry}")
    return min(max_s, base_s * 2.0 ** (retry - 1))


def is_retryable(status: int | None) -> bool:
    """Retry connection errors (no status) and server errors; never 2xx-4xx."""
    return status is None or status >= 500


@dataclass(frozen=True)
class RequestResult:
    """The outcome of one transaction after all its attempts."""

    index: int
    transaction_id: str
    status: int | None
    """HTTP status of the last attempt; None when no answer came (connection error)."""
    latency_s: float
    """Client-side latency of the last attempt."""
    attempts: int
    risk_level: str | None = None
    risk_score: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.risk_level is not None


def percentiles(values: Sequence[float], qs: Iterable[float] = LATENCY_PERCENTILES) -> dict:
    """Percentiles (linear interpolation) of ``values`` keyed ``p50``...; None when empty."""
    arr = np.asarray(values, dtype=float)
    out = {}
    for q in qs:
        key = f"p{q:g}".replace(".", "_")
        out[key] = float(np.percentile(arr, q)) if arr.size else None
    return out


def latency_summary(results: Sequence[RequestResult], elapsed_s: float) -> dict:
    """Client-side view of a run: counts, status mix, throughput, latency percentiles (ms)."""
    ok = [r for r in results if r.ok]
    lat_ms = [r.latency_s * 1000.0 for r in ok]
    statuses = Counter("error" if r.status is None else str(r.status) for r in results)
    return {
        "requests": len(results),
        "succeeded": len(ok),
        "failed": len(results) - len(ok),
        "retries": sum(max(0, r.attempts - 1) for r in results),
        "status_counts": dict(sorted(statuses.items())),
        "elapsed_s": elapsed_s,
        "throughput_rps": (len(ok) / elapsed_s) if elapsed_s > 0 else None,
        "latency_ms": {
            **percentiles(lat_ms),
            "mean": float(np.mean(lat_ms)) if lat_ms else None,
            "max": float(np.max(lat_ms)) if lat_ms else None,
        },
    }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def online_quality(
    results: Sequence[RequestResult], labels: Mapping[str, tuple[bool, str]]
) -> dict:
    """Live model quality from the answered requests joined with held-out labels.

    Args:
        results: Request outcomes; only successful ones (with a risk level) count.
        labels: ``transaction_id -> (is_fraud, fraud_type)``.

    Returns:
        ``matched`` / ``unlabelled`` counts, ``fraud_rate``; ``per_level`` (for each risk
        level: transactions, frauds and precision = share of frauds among them);
        ``at_or_above`` (for Medium and High: flagged, tp, fp, fn, precision, recall when
        that level or higher counts as an alert); ``per_fraud_type`` (for each fraud type
        seen: transactions and the share flagged at Medium+ and at High - the recall for
        that pattern; for ``none`` this is the false-positive rate).
    """
    rank = {level: i for i, level in enumerate(RISK_LEVELS)}
    pairs: list[tuple[int, bool, str]] = []
    unlabelled = 0
    for r in results:
        if not r.ok:
            continue
        label = labels.get(r.transaction_id)
        if label is None:
            unlabelled += 1
            continue
        if r.risk_level not in rank:
            raise SimulatorError(
                f"transaction {r.transaction_id}: unknown risk_level {r.risk_level!r} in answer"
            )
        pairs.append((rank[r.risk_level], bool(label[0]), str(label[1])))

    frauds = sum(1 for _, fraud, _ in pairs if fraud)
    per_level = {}
    for level in RISK_LEVELS:
        members = [fraud for lvl, fraud, _ in pairs if lvl == rank[level]]
        per_level[level] = {
            "transactions": len(members),
            "frauds": sum(members),
            "precision": _ratio(sum(members), len(members)),
        }
    at_or_above = {}
    for level in FLAGGED_LEVELS:
        tp = sum(1 for lvl, fraud, _ in pairs if lvl >= rank[level] and fraud)
        fp = sum(1 for lvl, fraud, _ in pairs if lvl >= rank[level] and not fraud)
        fn = frauds - tp
        at_or_above[level] = {
            "flagged": tp + fp,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, frauds),
        }
    per_type = {}
    order = {t: i for i, t in enumerate(FRAUD_TYPES)}
    for ftype in sorted({t for _, _, t in pairs}, key=lambda t: (order.get(t, 99), t)):
        levels = [lvl for lvl, _, t in pairs if t == ftype]
        per_type[ftype] = {
            "transactions": len(levels),
            "flagged_medium_plus": _ratio(
                sum(lvl >= rank["Medium Risk"] for lvl in levels), len(levels)
            ),
            "flagged_high": _ratio(sum(lvl >= rank["High Risk"] for lvl in levels), len(levels)),
        }
    return {
        "matched": len(pairs),
        "unlabelled": unlabelled,
        "frauds": frauds,
        "fraud_rate": _ratio(frauds, len(pairs)),
        "per_level": per_level,
        "at_or_above": at_or_above,
        "per_fraud_type": per_type,
    }


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_report(report: Mapping[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    lat = report["latency"]
    ms = lat["latency_ms"]
    lines = [
        f"target: {report['target']}",
        f"requests: {lat['requests']}  ok: {lat['succeeded']}  failed: {lat['failed']}  "
        f"retries: {lat['retries']}  statuses: "
        + ", ".join(f"{k}={v}" for k, v in lat["status_counts"].items()),
        f"elapsed: {lat['elapsed_s']:.2f}s  throughput: {_fmt(lat['throughput_rps'], '.1f')} req/s",
        "latency (client, ms): "
        + "  ".join(f"{k}={_fmt(ms[k], '.2f')}" for k in ("p50", "p90", "p95", "p99", "max")),
    ]
    quality = report.get("quality")
    if quality and quality["matched"]:
        lines += [
            "",
            f"online quality: {quality['matched']} labelled answers, {quality['frauds']} frauds "
            f"(rate {_fmt(quality['fraud_rate'], '.2%')}), {quality['unlabelled']} without label",
            f"  {'risk level':<14}{'n':>8}{'frauds':>8}{'precision':>11}",
        ]
        for level, row in quality["per_level"].items():
            lines.append(
                f"  {level:<14}{row['transactions']:>8}{row['frauds']:>8}"
                f"{_fmt(row['precision'], '.1%'):>11}"
            )
        lines.append(f"  {'alert at':<14}{'flagged':>8}{'precision':>11}{'recall':>9}")
        for level, row in quality["at_or_above"].items():
            lines.append(
                f"  {level + '+':<14}{row['flagged']:>8}{_fmt(row['precision'], '.1%'):>11}"
                f"{_fmt(row['recall'], '.1%'):>9}"
            )
        lines.append(f"  {'fraud type':<16}{'n':>7}{'medium+':>9}{'high':>8}")
        for ftype, row in quality["per_fraud_type"].items():
            lines.append(
                f"  {ftype:<16}{row['transactions']:>7}"
                f"{_fmt(row['flagged_medium_plus'], '.1%'):>9}{_fmt(row['flagged_high'], '.1%'):>8}"
            )
        lines.append("  (for fraud type 'none' the flagged shares are false-positive rates)")
    return "\n".join(lines)


def api_gateway_v2_event(
    body: bytes,
    *,
    path: str = PREDICT_PATH,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
) -> dict:
    """An API Gateway HTTP API (payload format 2.0) event for one request, as AWS sends it."""
    now = dt.datetime.now(dt.UTC)
    request_id = uuid.uuid4().hex
    all_headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "host": "simulator.execute-api.us-east-1.amazonaws.com",
        "user-agent": "pos-traffic-simulator",
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "simulator",
            "domainName": all_headers["host"],
            "domainPrefix": "simulator",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": all_headers["user-agent"],
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": body.decode(),
        "isBase64Encoded": False,
    }
