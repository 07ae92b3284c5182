"""Hostile clients against the real app over real HTTP: uvicorn on loopback, a demo bundle.

- A client that sends half a body and hangs up is not a server error in /metrics.
- Pathological JSON is a 400 over the wire too (the app under uvicorn, not a test client).
- schemathesis with every check, on every operation, from the served OpenAPI schema:
  ``SCHEMATHESIS_EXAMPLES`` examples per operation and phase (default 10: a few hundred
  cases with the coverage phase) and at least ``SCHEMATHESIS_MIN_CASES`` cases in total;
  ``make test-schemathesis`` runs the long version (>= 2,000 cases).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import BRIEF_REQUEST, REPO, free_port, get, post_json, running, uvicorn_cmd
from tools.demo import build_demo_bundle

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
MIN_CASES = int(os.environ.get("SCHEMATHESIS_MIN_CASES", "200"))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """uvicorn serving a small demo bundle on a free loopback port; yields its base URL."""
    root = tmp_path_factory.mktemp("hostile")
    bundle = build_demo_bundle(root / "bundle", rows=3000, n_estimators=30, iforest_trees=20)
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(bundle.path), "PYTHONPATH": str(REPO)}
    for key in ("MODEL_URI", "API_KEY", "PROMETHEUS_MULTIPROC_DIR", "METRICS_MODE"):
        env.pop(key, None)
    cmd = uvicorn_cmd(port)
    base = f"http://127.0.0.1:{port}"
    with running(cmd, f"{base}/healthz", env=env, log=root / "uvicorn.log", timeout=180):
        yield base


def _requests_by_status(base: str, route: str) -> Counter:
    text = get(f"{base}/metrics")[1].decode()
    counts: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("pos_risk_requests_total{") and f'route="{route}"' in line:
            status = re.search(r'status="(\d+)"', line).group(1)
            counts[status] += float(line.rsplit(" ", 1)[1])
    return counts


def test_client_hanging_up_mid_body_is_not_a_server_error(server):
    """Half a body, then close: recorded as 499 (client closed request), never 5xx."""
    before = _requests_by_status(server, "/v1/predict")
    body = json.dumps(BRIEF_REQUEST).encode()
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (host.encode(), len(body))
        )
        sock.sendall(body[: len(body) // 2])
    # The server notices the hang-up asynchronously: wait until the request is counted.
    deadline = time.monotonic() + 60
    while True:
        after = _requests_by_status(server, "/v1/predict")
        if sum(after.values()) > sum(before.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    new = after - before
    assert new == Counter({"499": 1.0}), new
    assert not any(status.startswith("5") for status in after), after
    # The server is fine afterwards.
    assert post_json(f"{server}/v1/predict", body)[0] == 200


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "body"),
        (
            json.dumps(BRIEF_REQUEST).encode()[:-1]
            + b', "x": '
            + b"[" * 50_000
            + b"]" * 50_000
            + b"}",
            "deep",
        ),
        (json.dumps(BRIEF_REQUEST).encode()[:-1] + b', "item_count": 1}', "duplicate key"),
    ],
)
def test_pathological_json_is_400_over_http(server, raw, detail):
    status, body = post_json(f"{server}/v1/predict", raw)
    assert status == 400 and detail in body["detail"], body
    assert not any(s.startswith("5") for s in _requests_by_status(server, "/v1/predict"))


# ---------------------------------------------------------------- schemathesis, every check


def test_schemathesis_all_checks(server, tmp_path):
    """schemathesis (every phase that applies: coverage and fuzzing) with every check.

    The CLI is schemathesis's full engine; its pytest loader for fixtures
    (``schemathesis.pytest.from_fixture``) fails on pytest 9 (``Function._nodeid``).
    """
    report = tmp_path / "schemathesis.json"
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{server}/schema/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "20261130"),
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=3600, cwd=tmp_path, env=os.environ.copy()
    )
    result = json.loads(report.read_text()) if report.exists() else {}
    cases = result.get("test_cases", {})
    print(f"schemathesis: {cases} in {result.get('running_time', 0):.0f} s")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert result["failures"] == [] and result["errors"] == [], proc.stdout[-6000:]
    assert result["operations"]["tested"] == result["operations"]["total"] == 6
    assert cases["with_failures"] == 0 and cases["errored"] == 0
    assert cases["generated"] >= MIN_CASES, cases
