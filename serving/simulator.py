"""POS traffic simulator: replay the held-out live stream against the scoring API.

The live stream (``split`` stage output: JSON Lines, RAW_TRANSACTION fields, ISO timestamps)
is sent transaction by transaction to ``POST /v1/predict`` - over HTTP, or in-process through
the AWS Lambda handler (``serving.lambda_handler.handler``) with API Gateway v2 events - at a
target rate or as fast as possible, from a few worker threads. 5xx answers and connection
errors are retried with exponential backoff. Every run is bounded by a request count and a
wall-clock duration, so the simulator cannot flood a service.

At the end it reports client-side latency percentiles and throughput and, joined with the
held-out labels (``live_labels`` Parquet), the online precision/recall per risk level and the
recall per fraud type: what loss prevention would see from the model on live traffic.

Pure logic (pacing, backoff, percentiles, online quality, the API Gateway event shape, the
report text) is separate from I/O (transports, threads, files) and unit-tested.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from components.contracts.schemas import FRAUD_TYPES, RISK_LEVELS

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- inputs


def _jsonable(row: dict) -> dict:
    return {
        k: (v.isoformat() if isinstance(v, dt.datetime | dt.date) else v) for k, v in row.items()
    }


def load_stream(uri: str, limit: int | None = None) -> list[dict]:
    """Read the live stream (JSON Lines, validated against RAW_TRANSACTION) as request bodies."""
    from components.contracts import storage
    from components.contracts.schemas import RAW_TRANSACTION

    table = storage.read_jsonl(uri, RAW_TRANSACTION, require_marker=False)  # any JSONL file
    if limit is not None:
        table = table.slice(0, limit)
    return [_jsonable(row) for row in table.to_pylist()]


def load_labels(uri: str) -> dict[str, tuple[bool, str]]:
    """Read the held-out live labels (LIVE_LABELS Parquet) keyed by transaction id."""
    from components.contracts import storage
    from components.contracts.schemas import LIVE_LABELS

    table = storage.read_table(uri, LIVE_LABELS, require_marker=False)
    return {
        tid: (bool(fraud), str(ftype))
        for tid, fraud, ftype in zip(
            table.column("transaction_id").to_pylist(),
            table.column("is_fraud").to_pylist(),
            table.column("fraud_type").to_pylist(),
            strict=True,
        )
    }


def find_latest(root: Path, pattern: str, suffixes: tuple[str, ...] = ("",)) -> Path | None:
    """Newest file (by modification time) under ``root`` matching ``pattern`` and a suffix."""
    if not root.exists():
        return None
    candidates = [p for p in root.rglob(pattern) if p.is_file() and p.suffix in suffixes]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def latest_live_files(root: Path) -> tuple[Path, Path | None]:
    """The newest live stream under ``root`` and the live labels written next to it.

    Matches both the split CLI's own names (``live_stream.jsonl``, ``live_labels.parquet``)
    and the local runner's artifact files (``.../split/live_stream``, no extension). The
    labels are searched in the stream's own run first (the nearest ancestor folder, up to
    three levels up, that holds one), so stream and labels come from the same split run.
    """
    stream = find_latest(root, "*live*stream*", ("", ".jsonl"))
    if stream is None:
        raise SimulatorError(
            f"{root}: no live stream (*live*stream*[.jsonl]) found; run the pipeline first"
        )
    folder = stream.parent
    for _ in range(4):
        labels = find_latest(folder, "*live*labels*", ("", ".parquet"))
        if labels is not None:
            return stream, labels
        if folder == root or folder.parent == folder:
            break
        folder = folder.parent
    return stream, None


# ---------------------------------------------------------------- transports


class Transport(Protocol):
    """Sends one request body and returns (HTTP status, parsed JSON body or None)."""

    name: str

    def send(self, body: bytes) -> tuple[int, Any]: ...

    def close(self) -> None: ...


class HttpTransport:
    """``POST <base_url>/v1/predict`` with httpx (one pooled client shared by all threads)."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float, concurrency: int):
        import httpx

        self.name = base_url.rstrip("/") + PREDICT_PATH
        headers = {"content-type": "application/json", "user-agent": "pos-traffic-simulator"}
        if api_key:
            headers["x-api-key"] = api_key
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.connection_errors: tuple[type[BaseException], ...] = (httpx.TransportError,)

    def send(self, body: bytes) -> tuple[int, Any]:
        resp = self._client.post(PREDICT_PATH, content=body)
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        return resp.status_code, payload

    def close(self) -> None:
        self._client.close()


class _LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers read."""

    function_name = "pos-risk-simulator"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:pos-risk-simulator"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/pos-risk-simulator"
    log_stream_name = "simulator"

    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def _ensure_event_loop() -> None:
    """Give a worker thread its own event loop: Mangum runs the ASGI app on the current one."""
    import asyncio

    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


class LambdaTransport:
    """Calls a Lambda handler in-process with API Gateway v2 events.

    One event at a time, as one Lambda execution environment processes one invocation at a
    time; concurrency > 1 only queues on the lock.
    """

    def __init__(
        self, handler: Callable[[dict, Any], dict], *, api_key: str | None, name: str = "handler"
    ):
        self.name = f"lambda:{name}"
        self._handler = handler
        self._headers = {"x-api-key": api_key} if api_key else {}
        self._lock = threading.Lock()
        self.connection_errors: tuple[type[BaseException], ...] = ()

    def send(self, body: bytes) -> tuple[int, Any]:
        event = api_gateway_v2_event(body, headers=self._headers)
        _ensure_event_loop()
        with self._lock:
            try:
                response = self._handler(event, _LambdaContext())
            except Exception as exc:
                # What API Gateway answers when the function raises.
                log.debug("lambda handler raised", exc_info=True)
                return 500, {"message": "Internal Server Error", "error": repr(exc)}
        raw = response.get("body") or ""
        if response.get("isBase64Encoded"):
            import base64

            raw = base64.b64decode(raw).decode()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return int(response["statusCode"]), payload

    def close(self) -> None:
        pass


def load_lambda_handler(spec: str = "serving.lambda_handler.handler") -> Callable:
    """Import ``module.attr`` (the Lambda CMD string) and return the handler."""
    import importlib

    module_name, _, attr = spec.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SimulatorError(f"lambda handler {spec!r} cannot be imported: {exc}") from exc


# ---------------------------------------------------------------- progress


class Progress:
    """A small thread-safe progress bar on a terminal, periodic log lines otherwise."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.failed = 0
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = enabled and self._stream.isatty()
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._next_log = 0.1

    def update(self, ok: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += 0 if ok else 1
            if not self._enabled:
                return
            now = time.monotonic()
            frac = self.done / self.total if self.total else 1.0
            if self._tty and (now - self._last_draw > 0.1 or self.done == self.total):
                self._last_draw = now
                self._stream.write("\r" + self.line(now))
                self._stream.flush()
            elif not self._tty and frac >= self._next_log:
                self._next_log = frac + 0.1
                log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self._start
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (
            f"[{bar:<30}] {self.done}/{self.total} {rate:6.1f} req/s  "
            f"failed {self.failed}  {elapsed:5.1f}s"
        )

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


# ---------------------------------------------------------------- the run


@dataclass
class _State:
    next_index: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _send_with_retries(
    transport: Transport, index: int, tx: dict, config: SimulatorConfig, deadline: float
) -> RequestResult:
    body = json.dumps(tx).encode()
    tid = str(tx.get("transaction_id", index))
    attempt = 0
    while True:
        attempt += 1
        status: int | None = None
        payload: Any = None
        error: str | None = None
        t0 = time.perf_counter()
        fatal = False
        try:
            status, payload = transport.send(body)
        except transport.connection_errors as exc:  # type: ignore[misc]
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a client-side bug: record it, never retry
            log.debug("transaction %s: %r", tid, exc, exc_info=True)
            error, fatal = f"{type(exc).__name__}: {exc}", True
        latency = time.perf_counter() - t0
        retry = not fatal and is_retryable(status) and attempt <= config.max_retries
        if retry:
            delay = backoff_delay(attempt, config.backoff_base_s, config.backoff_max_s)
            retry = time.monotonic() + delay < deadline
        if not retry:
            break
        time.sleep(delay)
    level = score = None
    if status == 200 and isinstance(payload, dict):
        level = payload.get("risk_level")
        score = payload.get("risk_score")
    elif error is None and status is not None and status != 200:
        error = json.dumps(payload)[:300] if payload is not None else f"HTTP {status}"
    return RequestResult(index, tid, status, latency, attempt, level, score, error)


def run(
    transactions: Sequence[dict],
    transport: Transport,
    config: SimulatorConfig,
    *,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[RequestResult], float]:
    """Send up to ``config.max_requests`` transactions; return results (in order) and elapsed s.

    Workers take the next transaction index from a shared counter and wait until its due
    time (``due_offset``), so the aggregate rate is paced globally. No new request starts
    after ``config.duration_s``.
    """
    total = min(len(transactions), config.max_requests)
    state = _State()
    results: list[RequestResult | None] = [None] * total
    start = clock()
    deadline = start + config.duration_s

    def worker() -> None:
        while True:
            with state.lock:
                index = state.next_index
                if index >= total:
                    return
                state.next_index += 1
            due = start + due_offset(index, config.rate)
            if due >= deadline:
                return
            wait = due - clock()
            if wait > 0:
                time.sleep(wait)
            if clock() >= deadline:
                return
            result = _send_with_retries(transport, index, transactions[index], config, deadline)
            results[index] = result
            if progress is not None:
                progress.update(result.ok)

    threads = [
        threading.Thread(target=worker, name=f"simulator-{i}", daemon=True)
        for i in range(min(config.concurrency, max(total, 1)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = clock() - start
    if progress is not None:
        progress.close()
    return [r for r in results if r is not None], elapsed


def build_report(
    target: str,
    config: SimulatorConfig,
    results: Sequence[RequestResult],
    elapsed_s: float,
    labels: Mapping[str, tuple[bool, str]] | None,
) -> dict:
    """The JSON report: config, client-side latency summary and (with labels) online quality."""
    failures = Counter(r.error for r in results if not r.ok and r.error)
    return {
        "target": target,
        "config": asdict(config),
        "latency": latency_summary(results, elapsed_s),
        "quality": online_quality(results, labels) if labels is not None else None,
        "top_errors": [{"error": e, "count": n} for e, n in failures.most_common(5)],
    }


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simulate_traffic",
        description="Replay the live POS stream against POST /v1/predict and report latency "
        "and online model quality. Bounded by --max-requests and --duration.",
    )
    p.add_argument(
        "--stream",
        default="latest",
        help="live stream JSON Lines (local path or s3:// URI), or 'latest' for the newest "
        "*live*stream*.jsonl under --search-root (default: latest)",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="live labels Parquet for online precision/recall; with --stream latest the "
        "labels of the same run are found automatically; 'none' disables",
    )
    p.add_argument(
        "--search-root",
        default=None,
        help="folder searched by --stream latest (default: $PIPELINE_ROOT, else $VAR_DIR)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="base URL of the service (default: %(default)s)",
    )
    target.add_argument(
        "--lambda-handler",
        nargs="?",
        const="serving.lambda_handler.handler",
        default=None,
        metavar="MODULE.ATTR",
        help="call this Lambda handler in-process with API Gateway v2 events instead of HTTP "
        "(default handler: serving.lambda_handler.handler)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="target requests/s; 0 = as fast as possible (default: 20)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="worker threads (default: 4)")
    p.add_argument(
        "--max-requests", type=int, default=1000, help="send at most N transactions (default: 1000)"
    )
    p.add_argument(
        "--duration", type=float, default=60.0, help="stop after S seconds (default: 60)"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, help="per-attempt timeout in s (default: 5)"
    )
    p.add_argument(
        "--retries", type=int, default=3, help="retries on 5xx/connection errors (default: 3)"
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=0.05,
        help="first retry delay in s, doubling (default: 0.05)",
    )
    p.add_argument(
        "--api-key", default=os.environ.get("API_KEY"), help="X-API-Key header (default: $API_KEY)"
    )
    p.add_argument(
        "--report", default=None, help="write the JSON report here (local path or s3:// URI)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _resolve_inputs(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.stream != "latest":
        labels = None if args.labels in (None, "none") else args.labels
        return args.stream, labels
    if args.search_root:
        root = Path(args.search_root)
    else:
        from components.contracts.settings import Settings

        settings = Settings.from_env()
        root = (
            Path(settings.pipeline_root)
            if not settings.pipeline_root.startswith("s3://")
            else settings.home
        )
        if not root.exists():
            root = settings.home
    stream, found_labels = latest_live_files(root)
    if args.labels == "none":
        return str(stream), None
    return str(stream), args.labels or (str(found_labels) if found_labels else None)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``scripts/simulate_traffic.py``). Returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpcore"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from components.contracts.schemas import SchemaError
    from components.contracts.storage import StorageError, write_json

    try:
        config = SimulatorConfig(
            rate=None if args.rate == 0 else args.rate,
            concurrency=args.concurrency,
            max_requests=args.max_requests,
            duration_s=args.duration,
            timeout_s=args.timeout,
            max_retries=args.retries,
            backoff_base_s=args.backoff,
            backoff_max_s=max(2.0, args.backoff),
        )
        stream_uri, labels_uri = _resolve_inputs(args)
        transactions = load_stream(stream_uri, limit=config.max_requests)
        labels = load_labels(labels_uri) if labels_uri else None
        transport: Transport
        if args.lambda_handler:
            transport = LambdaTransport(
                load_lambda_handler(args.lambda_handler),
                api_key=args.api_key,
                name=args.lambda_handler,
            )
        else:
            transport = HttpTransport(
                args.url,
                api_key=args.api_key,
                timeout_s=config.timeout_s,
                concurrency=config.concurrency,
            )
    except (SimulatorError, SchemaError, StorageError) as exc:
        print(f"simulate_traffic: error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "replaying %d transactions from %s against %s (rate %s, concurrency %d, max %.0fs)",
        min(len(transactions), config.max_requests),
        stream_uri,
        transport.name,
        "max" if config.rate is None else f"{config.rate:g}/s",
        config.concurrency,
        config.duration_s,
    )
    progress = Progress(min(len(transactions), config.max_requests), enabled=not args.no_progress)
    try:
        results, elapsed = run(transactions, transport, config, progress=progress)
    finally:
        transport.close()
    report = build_report(transport.name, config, results, elapsed, labels)
    report["stream"] = stream_uri
    report["labels"] = labels_uri
    print(format_report(report))
    if args.report:
        write_json(report, args.report)
        print(f"report: {args.report}")
    if not results:
        print("simulate_traffic: error: no request was sent (duration too short?)", file=sys.stderr)
        return 1
    if not any(r.ok for r in results):
        print("simulate_traffic: error: no request succeeded", file=sys.stderr)
        return 1
    return 0
