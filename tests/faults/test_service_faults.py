"""Services that are down: one line, exit 1, within ``SERVICE_TIMEOUT_S``.

MLflow "down" is a tracking URI on a loopback port nothing listens on (connection refused,
what a stopped server gives); S3 "down" is an endpoint on such a port. Both are real
network failures on loopback, nothing is mocked. The time bound is generous (the knob plus
60 s for start-up and scoring on a busy machine): it tells "gave up after the knob" from
MLflow's default of ~250 s of retries, not one second from another.
"""

from __future__ import annotations

import socket
import time

import pytest
from faultlib import clean_env, run_stage, s3_env, split_args, the_error

pytestmark = pytest.mark.integration

KNOB_S = 10
SLACK_S = 60


def closed_port() -> int:
    """A loopback port that was just free: bound, then released, so nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_down(tmp_path) -> dict[str, str]:
    return clean_env(
        tmp_path / "var",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed_port()}",
        SERVICE_TIMEOUT_S=str(KNOB_S),
    )


def _timed(stage, *args, env):
    started = time.monotonic()
    proc = run_stage(stage, *args, env=env, timeout=KNOB_S + SLACK_S + 60)
    return proc, time.monotonic() - started


def test_evaluate_with_mlflow_down(trained, tmp_path, mlflow_down):
    proc, elapsed = _timed(
        "evaluate", "--in-features", str(trained["features"]),
        "--in-xgb-model", str(trained["xgb"]), "--in-iforest-model", str(trained["iforest"]),
        "--out-evaluation", str(tmp_path / "evaluation"), env=mlflow_down,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "127.0.0.1" in the_error(proc.stderr, "evaluate")
    assert elapsed < KNOB_S + SLACK_S
    assert not (tmp_path / "evaluation").exists()


def _register_args(trained, out) -> list[str]:
    """``register``'s arguments: the trained session models, outputs under ``out``."""
    return [
        "--in-xgb-model", str(trained["xgb"]), "--in-iforest-model", str(trained["iforest"]),
        "--in-evaluation", str(trained["evaluation"]), "--in-profiles", str(trained["profiles"]),
        "--in-features", str(trained["features"]),
        "--out-bundle", str(out / "bundle"), "--out-decision", str(out / "d.json"),
    ]  # fmt: skip


def test_register_with_mlflow_down(trained, tmp_path, mlflow_down):
    proc, elapsed = _timed(
        "register", *_register_args(trained, tmp_path),
        env=mlflow_down,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "127.0.0.1" in the_error(proc.stderr, "register")
    assert elapsed < KNOB_S + SLACK_S
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "d.json").exists()


def test_train_xgb_with_mlflow_down(trained, tmp_path, mlflow_down):
    proc, elapsed = _timed(
        "train_xgb", "--in-features", str(trained["features"]),
        "--out-model", str(tmp_path / "model"), "--n-estimators", "5", env=mlflow_down,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    the_error(proc.stderr, "train-xgb")
    assert elapsed < KNOB_S + SLACK_S
    assert not (tmp_path / "model").exists()


def test_server_with_model_uri_and_mlflow_down(tmp_path, mlflow_down):
    """uvicorn with ``MODEL_URI`` and MLflow down: the start fails within the knob (not
    MLflow's ~250 s of retries) and the error is one line naming the URI and the URL."""
    import subprocess
    import sys

    from faultlib import REPO

    uri = "models:/cashier-integrity-risk@champion"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app",
         "--host", "127.0.0.1", "--port", str(closed_port())],
        cwd=REPO, env={**mlflow_down, "MODEL_URI": uri}, capture_output=True, text=True,
        timeout=KNOB_S + SLACK_S + 60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode != 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "ModelLoadError:" in line]
    assert len(lines) == 1, proc.stderr
    assert uri in lines[0] and mlflow_down["MLFLOW_TRACKING_URI"] in lines[0]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert elapsed < KNOB_S + SLACK_S


def test_split_with_s3_down(trained, tmp_path):
    env = s3_env(tmp_path / "var", f"http://127.0.0.1:{closed_port()}")
    proc = run_stage(
        "split", *split_args("s3://bucket/transactions", tmp_path), env=env, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert "s3://bucket/transactions" in the_error(proc.stderr, "split")


def test_train_iforest_writing_to_s3_down(trained, tmp_path):
    """The output side: an S3 write that cannot connect (pyarrow's raw OSError)."""
    env = s3_env(tmp_path / "var", f"http://127.0.0.1:{closed_port()}")
    proc = run_stage(
        "train_iforest", "--in-features", str(trained["features"]),
        "--out-model", "s3://bucket/model", "--n-estimators", "5",
        "--out-metrics", "s3://bucket/metrics.json", env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    the_error(proc.stderr, "train-iforest")


def test_bad_service_timeout_is_a_user_error(trained, tmp_path):
    env = clean_env(tmp_path / "var", SERVICE_TIMEOUT_S="soon")
    proc = run_stage(
        "register", *_register_args(trained, tmp_path),
        env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "SERVICE_TIMEOUT_S" in the_error(proc.stderr, "register")


@pytest.mark.parametrize("budget", [1, 5, 10, 30, 120, 600])
def test_retry_schedule_fits_the_budget(budget):
    """urllib3 sleeps 0, 2f, 4f, ... (+ jitter) between attempts: the sum fits the knob."""
    from components.contracts.settings import mlflow_retry_env

    env = mlflow_retry_env(budget)
    retries, factor = int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), 1
    jitter = float(env["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"])
    worst = sum((0 if i == 0 else factor * 2**i) + jitter for i in range(retries))
    assert worst <= budget
    assert int(env["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= max(1, budget)
    assert retries <= 10  # MLflow refuses more
