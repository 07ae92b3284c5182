"""Shared fixtures: real servers on loopback (moto's S3 server, an MLflow tracking server).

Servers are started as real processes on free 127.0.0.1 ports and stopped at the end of the
session. Nothing here talks to AWS or any other outside address.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


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
    for key in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_ARTIFACT_LOCATION",
        "PIPELINE_ROOT",
        "S3_ENDPOINT_URL",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
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
