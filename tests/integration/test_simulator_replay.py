"""The traffic simulator CLI against the real app: over HTTP (uvicorn) and in-process Lambda.

Uses the live stream, live labels and bundle of the session's stage-CLI pipeline run, so the
online-quality report joins real predictions with the held-out labels. All traffic goes to
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.contracts.schemas import FRAUD_TYPES, RISK_LEVELS
from tests.conftest import free_port
from tests.integration.test_prometheus_stack import numba_cache, serve_app

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def simulate(
    *args: str, env: dict | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.simulator", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def check_report(report: dict, n: int) -> None:
    lat = report["latency"]
    assert (lat["requests"], lat["succeeded"], lat["failed"]) == (n, n, 0)
    assert lat["status_counts"] == {"200": n}
    ms = lat["latency_ms"]
    assert 0 < ms["p50"] <= ms["p95"] <= ms["p99"] <= ms["max"]
    q = report["quality"]
    assert q["matched"] == n and q["unlabelled"] == 0
    assert sum(row["transactions"] for row in q["per_level"].values()) == n
    assert set(q["per_level"]) == set(RISK_LEVELS)
    assert set(q["per_fraud_type"]) <= set(FRAUD_TYPES) and "none" in q["per_fraud_type"]
    for level in ("Medium Risk", "High Risk"):
        row = q["at_or_above"][level]
        assert row["tp"] + row["fn"] == q["frauds"]
        assert row["tp"] + row["fp"] == row["flagged"]
    cohorts = report["cohorts"]["cohorts"]  # split's live labels carry the cohort dates
    assert cohorts["established"]["transactions"] + cohorts["new_hires"]["transactions"] == n
    assert cohorts["thieves"]["frauds"] <= q["frauds"]  # customers steal at SCO too


def test_replay_over_http_paced_with_online_quality(trained_pipeline, tmp_path, tmp_path_factory):
    report_path = tmp_path / "report.json"
    with serve_app(trained_pipeline["bundle"], tmp_path, numba_cache(tmp_path_factory)) as (url, _):
        proc = simulate(
            "--stream", trained_pipeline["live_stream"],
            "--labels", trained_pipeline["live_labels"],
            "--url", url, "--rate", "100", "--concurrency", "4",
            "--max-requests", "200", "--duration", "60", "--report", str(report_path),
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    check_report(report, 200)
    # 200 requests paced at 100/s: the last one is due 1.99 s after the first.
    assert report["latency"]["elapsed_s"] >= 1.99
    assert report["latency"]["throughput_rps"] <= 101
    assert "online quality: 200 labelled answers" in proc.stdout
    assert "p95=" in proc.stdout


def test_replay_through_the_lambda_handler_in_process(trained_pipeline, tmp_path, tmp_path_factory):
    """API Gateway v2 events into ``serving.lambda_handler.handler`` (Mangum), no server."""
    env = {
        **trained_pipeline["env"],
        "MODEL_DIR": trained_pipeline["bundle"],
        "NUMBA_CACHE_DIR": str(numba_cache(tmp_path_factory)),
    }
    env.pop("API_KEY", None)
    report_path = tmp_path / "lambda.json"
    proc = simulate(
        "--stream", trained_pipeline["live_stream"],
        "--labels", trained_pipeline["live_labels"],
        "--lambda-handler", "--rate", "0", "--max-requests", "60", "--report", str(report_path),
        env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["target"] == "lambda:serving.lambda_handler.handler"
    check_report(report, 60)


def test_unreachable_service_is_retried_with_backoff_then_reported(trained_pipeline):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    proc = simulate(
        "--stream", trained_pipeline["live_stream"], "--labels", "none",
        "--url", url, "--rate", "0", "--concurrency", "2", "--max-requests", "4",
        "--retries", "2", "--backoff", "0.05", "--duration", "20",
        env={**os.environ},
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1
    assert "no request succeeded" in proc.stderr
    assert "requests: 4  ok: 0  failed: 4  retries: 8" in proc.stdout
    assert "error=4" in proc.stdout
    assert elapsed < 30
