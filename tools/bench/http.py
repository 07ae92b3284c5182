"""HTTP load for the serving benchmark: server subprocesses pinned to a core, wrk or a
Python load generator, the request body they send, and a throwaway ``redis-server``.

Every request carries a new ``transaction_id`` (``BODY``'s ``T100`` plus a counter), so a
live profile store folds each one instead of deduplicating a retry.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tools.demo import BRIEF_REQUEST

BODY = {
    **BRIEF_REQUEST,
    "timestamp": "2026-01-20T14:30:00",
    "store_id": "S01",
    "lane_type": "staffed",
    "payment_type": "card",
}

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")
local counter, prefix = 0, tostring(os.time()) .. tostring(math.random(1e6))
request = function()
  counter = counter + 1
  local body = string.gsub(wrk.body, '"T100"', '"T100-' .. prefix .. '-' .. counter .. '"', 1)
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
                 + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    "BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"errors\": %d, \"p50_us\": %d, " ..
    "\"p95_us\": %d, \"p99_us\": %d, \"max_us\": %d}\n",
    summary.requests, summary.duration, errors, latency:percentile(50),
    latency:percentile(95), latency:percentile(99), latency.max))
end
"""


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def taskset(core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(core)]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Server:
    """A server subprocess pinned to one core; stopped on exit."""

    def __init__(self, cmd: list[str], env: dict, health: str, log: Path, core: int | None):
        self.proc = subprocess.Popen(
            taskset(core) + cmd,
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.health = health
        self.log = log

    def __enter__(self) -> Server:
        try:
            wait_ready(self.health, self.proc)
        except Exception:
            self.__exit__()
            raise RuntimeError(
                f"server failed to start; log tail:\n{self.log.read_text()[-1500:]}"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def redis_server(
    workdir: Path, core: int | None = None, extra: Sequence[str] = ()
) -> Iterator[str]:
    """A real ``redis-server`` on loopback (no persistence) until the block ends; yields its
    URL. ``DEBUG`` is allowed from loopback (tests use ``DEBUG SLEEP`` to make it slow).
    ``core`` pins it (the bench keeps it off the app server's core); ``extra`` are more
    server options (e.g. ``--tls-port``)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    cmd = [
        *taskset(core),
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    cmd += ["--dir", str(workdir), "--enable-debug-command", "local", *extra]
    with open(workdir / "redis.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {workdir / 'redis.log'}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def post_once(url: str, body: bytes) -> None:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def load_wrk(url: str, body: dict, *, connections: int, seconds: float, core: int | None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA)
        script = f.name
    try:
        env = {**os.environ, "BENCH_BODY": json.dumps(body)}
        out = subprocess.run(
            [
                *taskset(core),
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                script,
                url,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(script)
    match = re.search(r"BENCH_JSON (\{.*\})", out)
    if not match:
        raise RuntimeError(f"wrk produced no result:\n{out[-1000:]}")
    r = json.loads(match.group(1))
    return {
        "requests": r["requests"],
        "errors": r["errors"],
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p95_ms": r["p95_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "generator": "wrk",
    }


def load_python(
    url: str, body: dict, *, connections: int, seconds: float, core: int | None
) -> dict:
    """Fallback load generator: one keep-alive http.client connection per thread."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    payload = json.dumps(body)
    ids = itertools.count()  # next() on a count is atomic under the GIL
    prefix = f"T100-{time.time_ns()}-"
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        local = []
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                data = payload.replace('"T100"', f'"{prefix}{next(ids)}"', 1).encode()
                conn.request("POST", u.path, data, {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status >= 400:
                    errors[0] += 1
            except OSError:
                errors[0] += 1
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            local.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(local)

    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p95_ms": pct(latencies, 95) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "generator": "python",
    }
