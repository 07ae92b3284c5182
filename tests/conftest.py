"""Shared fixtures: real servers on loopback (moto's S3 server, an MLflow tracking server).

Servers are started as real processes on free 127.0.0.1 ports and stopped at the end of the
session. Nothing here talks to AWS or any other outside address.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest

from tools.demo import BRIEF_REQUEST  # noqa: F401  (the serving tests import it from here)

REPO = Path(__file__).resolve().parents[1]

# Local runs explore new random examples every time (and keep failures in .hypothesis/);
# CI (CI=true) replays a fixed, derandomized set so a submission's verdict is reproducible.
hypothesis.settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")
VENV_BIN = Path(sys.executable).parent


SERVICE_ENV_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_ARTIFACT_LOCATION",
    "PIPELINE_ROOT",
    "S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
"""Settings that point a stage at services; without them it uses the embedded defaults."""


def run_stage(
    stage: str, *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m components.<stage> ARGS`` as a real subprocess (this environment + ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", f"components.{stage}", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def uvicorn_cmd(port: int, workers: int = 1) -> list[str]:
    """The serving app under uvicorn on loopback (``serving.app:create_app``, settings from env)."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log",
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers (any HTTP status) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def post_json(
    url: str, body: object, headers: dict | None = None, timeout: float = 30
) -> tuple[int, object]:
    """POST ``body`` (JSON-encoded, or raw ``bytes`` sent as they are) to ``url``; returns
    the status and the decoded JSON reply, error statuses included."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    """GET ``url``; returns the status and the body (raises on an error status)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


@contextlib.contextmanager
def running(
    cmd: list[str],
    url: str,
    *,
    env: dict | None = None,
    log: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen]:
    """Run a server process until the block ends; its output goes to ``log``."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_http(url, timeout, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real S3 API (moto's server) on loopback; yields the env vars that point at it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with running(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        f"{endpoint}/moto-api/",
        log=log,
    ):
        yield {
            "S3_ENDPOINT_URL": endpoint,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@pytest.fixture
def s3_bucket(moto_s3, monkeypatch) -> str:
    """A fresh bucket on the moto server; the S3 env vars are set for the test."""
    import uuid

    import boto3

    for key, value in moto_s3.items():
        monkeypatch.setenv(key, value)
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3["S3_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture
def local_env(tmp_path, monkeypatch) -> Path:
    """Embedded defaults in a temp folder: VAR_DIR (SQLite MLflow, pipeline root) and no S3."""
    var = tmp_path / "var"
    monkeypatch.setenv("VAR_DIR", str(var))
    for key in SERVICE_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return var


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` process (SQLite store, local artifacts); yields its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_bin = VENV_BIN / "mlflow"
    if not mlflow_bin.exists():
        mlflow_bin = Path(shutil.which("mlflow") or "mlflow")
    cmd = [
        str(mlflow_bin),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        (root / "artifacts").as_uri(),
        "--serve-artifacts",
        "--workers",
        "1",
    ]
    with running(cmd, f"{url}/health", env=env, log=root / "server.log", timeout=120):
        yield url


STAGE_ROWS = 30_000
"""Rows for the session's shared pipeline run: big enough for every fraud type, fast on 2 cores."""


@pytest.fixture(scope="session")
def trained_pipeline(tmp_path_factory) -> dict[str, object]:
    """The seven stage CLIs run once per session on small data, as real subprocesses.

    Embedded defaults in a temp VAR_DIR (SQLite MLflow store, local artifacts). Yields a dict
    of output paths (``transactions``, ``historic``, ``live_stream``, ``live_labels``,
    ``time_splits``, ``features``, ``profiles``, ``xgb_model``, ``iforest_model``,
    ``evaluation``, ``bundle``, ``decision``) plus ``env`` (the environment the stages ran
    with, for tests that run more commands against the same registry) and ``var``.
    """
    root = tmp_path_factory.mktemp("pipeline")
    var = root / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "AWS_", "S3_")) and k not in ("PIPELINE_ROOT",)
    }
    env |= {"VAR_DIR": str(var), "PIPELINE_RUN_ID": "pytest-session"}
    p = {
        name: str(root / name)
        for name in (
            "transactions",
            "historic",
            "evaluation",
            "bundle",
            "xgb_model",
            "iforest_model",
        )
    }
    p |= {
        "live_stream": str(root / "live.jsonl"),
        "live_labels": str(root / "live_labels.parquet"),
        "time_splits": str(root / "time_splits.json"),
        "features": str(root / "features.parquet"),
        "profiles": str(root / "profiles.parquet"),
        "decision": str(root / "decision.json"),
    }
    steps = [
        (
            "datagen",
            "--rows",
            str(STAGE_ROWS),
            "--seed",
            "7",
            "--out-transactions",
            p["transactions"],
        ),
        (
            "split",
            "--in-transactions",
            p["transactions"],
            "--out-historic",
            p["historic"],
            "--out-live-stream",
            p["live_stream"],
            "--out-live-labels",
            p["live_labels"],
            "--out-time-splits",
            p["time_splits"],
        ),
        (
            "features",
            "--in-historic",
            p["historic"],
            "--in-time-splits",
            p["time_splits"],
            "--out-features",
            p["features"],
            "--out-profiles",
            p["profiles"],
        ),
        (
            "train_xgb",
            "--in-features",
            p["features"],
            "--out-model",
            p["xgb_model"],
            "--out-metrics",
            str(root / "xgb_metrics.json"),
            "--n-estimators",
            "150",
        ),
        (
            "train_iforest",
            "--in-features",
            p["features"],
            "--out-model",
            p["iforest_model"],
            "--out-metrics",
            str(root / "iforest_metrics.json"),
            "--n-estimators",
            "100",
        ),
        (
            "evaluate",
            "--in-features",
            p["features"],
            "--in-xgb-model",
            p["xgb_model"],
            "--in-iforest-model",
            p["iforest_model"],
            "--out-evaluation",
            p["evaluation"],
            "--out-metrics",
            str(root / "eval_metrics.json"),
            "--out-classification-metrics",
            str(root / "eval_cm.json"),
            "--out-report",
            str(root / "report.html"),
        ),
        (
            "register",
            "--in-xgb-model",
            p["xgb_model"],
            "--in-iforest-model",
            p["iforest_model"],
            "--in-evaluation",
            p["evaluation"],
            "--in-profiles",
            p["profiles"],
            "--in-features",
            p["features"],
            "--out-bundle",
            p["bundle"],
            "--out-decision",
            p["decision"],
            # Floors for the generated world's difficulty (see test_stage_chain); the gate's
            # defaults are set for production.
            "--min-pr-auc",
            "0.05",
            "--min-recall-at-1pct-fpr",
            "0.1",
        ),
    ]
    for stage, *args in steps:
        proc = subprocess.run(
            [sys.executable, "-m", f"components.{stage}", *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"stage {stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    from components.contracts import storage

    decision = storage.open_output(p["decision"]).read_json()
    if not decision["passed"]:  # a quality regression shows up here, loudly, for every user
        raise RuntimeError(f"the session model failed the quality gate: {decision['reason']}")
    return {**p, "env": env, "var": str(var)}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A real ``redis-server`` (the Debian package) on a free loopback port, no persistence;
    yields its URL. Tests that share it use their own ``STORE_NAMESPACE``."""
    from tools.bench.http import redis_server as run_redis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with run_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
