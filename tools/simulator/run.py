"""The bounded simulator run: worker threads, pacing, retries, progress and the report."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from tools.simulator.cohorts import CohortDates, quality_by_cohort
from tools.simulator.logic import (
    RequestResult,
    SimulatorConfig,
    backoff_delay,
    due_offset,
    is_retryable,
    latency_summary,
    online_quality,
)
from tools.simulator.transport import Transport

log = logging.getLogger(__name__)


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
    *,
    transactions: Sequence[Mapping] | None = None,
    cohort_dates: CohortDates | None = None,
    alert_score: float | None = None,
) -> dict:
    """The JSON report: config, client-side latency summary and (with labels) online quality;
    with the replayed ``transactions`` and the labels' ``cohort_dates`` also the quality per
    cashier cohort (``cohorts.quality_by_cohort``, also alerting at ``alert_score``)."""
    failures = Counter(r.error for r in results if not r.ok and r.error)
    by_cohort = None
    if labels is not None and transactions is not None and cohort_dates is not None:
        by_cohort = quality_by_cohort(
            results, transactions, labels, cohort_dates, alert_score=alert_score
        )
    return {
        "target": target,
        "config": asdict(config),
        "latency": latency_summary(results, elapsed_s),
        "quality": online_quality(results, labels) if labels is not None else None,
        "cohorts": by_cohort,
        "top_errors": [{"error": e, "count": n} for e, n in failures.most_common(5)],
    }
