"""Helpers of the fault-injection suite (subprocess runs, one-line error check, inputs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from published import publish_in_place

from components.contracts import features as F
from components.contracts import storage

REPO = Path(__file__).resolve().parents[2]


def clean_env(var: Path, **extra: str) -> dict[str, str]:
    """The process environment minus MLflow/S3 settings, with embedded defaults in ``var``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "AWS_", "S3_")) and k not in ("PIPELINE_ROOT",)
    }
    return {**env, "VAR_DIR": str(var), "PIPELINE_RUN_ID": "standalone", **extra}


def s3_env(var: Path, endpoint_url: str, **extra: str) -> dict[str, str]:
    """``clean_env`` pointed at an S3 endpoint (moto, a proxy, a dead or silent port)."""
    return clean_env(
        var,
        S3_ENDPOINT_URL=endpoint_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )


def split_args(src: str, out: Path) -> list[str]:
    """``split``'s arguments: transactions from ``src``, every output under ``out``."""
    return [
        "--in-transactions", src,
        "--out-historic", str(out / "h"), "--out-live-stream", str(out / "l.jsonl"),
        "--out-live-labels", str(out / "ll.parquet"), "--out-time-splits", str(out / "t.json"),
    ]  # fmt: skip


def run_stage(stage: str, *args: str, env: dict[str, str], timeout: float = 300):
    """``python -m components.<stage> ARGS`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", f"components.{stage}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr lines that are not log records (the one-line error contract)."""
    return [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not line[:4].isdigit()  # log lines start with the date
    ]


def profiles_table():
    """A profile table (features.PROFILE_SCHEMA) from a few synthetic transactions."""
    rng = np.random.default_rng(0)
    n = 300
    raw = np.zeros((n, len(F.RAW_INPUTS)))
    raw[:, 0] = 1.768e9 + np.arange(n) * 60
    raw[:, 2] = rng.integers(1, 30, n)
    raw[:, 3] = raw[:, 2] * rng.uniform(2, 8, n)
    raw[:, 14] = raw[:, 2] * 0.45
    raw[:, 15] = raw[:, 2] * 3.5
    state = F.ProfileState()
    state.advance(raw, [f"C{i % 5}" for i in range(n)], ["S1"] * n)
    return state.to_table()


def unpublished_copy(src: Path, dst: Path) -> Path:
    """The files of the published output ``src`` (its committed version) in a plain folder
    ``dst``: damage them, then ``publish_in_place(dst)`` so that the marker matches the
    damaged bytes and the stage's own check (not storage's sha256) is what refuses them."""
    shutil.copytree(storage.open_output(str(src)).path(), dst)
    return dst


def write_published(table, path: Path) -> Path:
    """``table`` as a Parquet file published as the output ``path`` (what stages read)."""
    pq.write_table(table, path)
    return publish_in_place(path)


def the_error(stderr: str, stage: str) -> str:
    """The single ``<stage>: error: ...`` line of ``stderr`` (no traceback anywhere)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"{stage}: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def runs(var: Path, stage: str) -> dict[str, object]:
    """The MLflow runs of ``stage`` in the embedded SQLite store under ``var`` (by id)."""
    import mlflow

    uri = f"sqlite:///{var.resolve() / 'mlflow' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cashier-integrity")
    if experiment is None:
        return {}
    return {
        r.info.run_id: r
        for r in client.search_runs([experiment.experiment_id], f"tags.stage = '{stage}'")
    }
