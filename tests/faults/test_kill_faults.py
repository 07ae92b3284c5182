"""Killed stages leave no MLflow run RUNNING: SIGTERM ends it KILLED at once; after a SIGKILL
(which cannot be caught) the next run of the same stage ends it KILLED.

Real processes and real signals against an embedded SQLite MLflow store. Where a stage must
be inside its MLflow run when the signal arrives, the run is held open by patching one
MLflow call to wait (the signal, the process and the store are real).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from faultlib import REPO, clean_env, runs

pytestmark = pytest.mark.integration

HOLD_IN_STAGE_RUN = """
import os, signal, sys, time
from components.contracts import cli, tracking
from components.contracts.settings import Settings
def main():
    with tracking.stage_run(Settings.from_env().mlflow, sys.argv[1]) as run:
        print(run.info.run_id, flush=True)
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(600)
sys.exit(cli.run(sys.argv[1], main))
"""


def hold(env, stage: str, how: str) -> tuple[subprocess.Popen, str]:
    """A process inside ``stage_run`` of ``stage``; returns it and its run id."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_STAGE_RUN, stage, how],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read() if proc.poll() is not None else "no run id"
    return proc, run_id


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return clean_env(tmp_path / "var")


def test_sigterm_ends_the_run_killed(env, tmp_path):
    proc, run_id = hold(env, "sigterm-stage", "wait")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "SIGTERM" in proc.stderr.read()
    assert runs(tmp_path / "var", "sigterm-stage")[run_id].info.status == "KILLED"


def test_sigkill_is_reaped_by_the_next_run_only_when_the_process_is_gone(env, tmp_path):
    killed, killed_id = hold(env, "reap-stage", "kill")
    assert killed.wait(timeout=60) == -signal.SIGKILL
    alive, alive_id = hold(env, "reap-stage", "wait")  # the next run: reaps the dead one only
    try:
        state = runs(tmp_path / "var", "reap-stage")
        assert state[killed_id].info.status == "KILLED"
        assert "reaped" in state[killed_id].data.tags["killed_reason"]
        assert state[alive_id].info.status == "RUNNING"  # a live process is never reaped
        third, _ = hold(env, "reap-stage", "wait")
        try:
            assert runs(tmp_path / "var", "reap-stage")[alive_id].info.status == "RUNNING"
        finally:
            third.send_signal(signal.SIGTERM)
            third.wait(timeout=60)
    finally:
        alive.send_signal(signal.SIGTERM)
        alive.wait(timeout=60)
    state = runs(tmp_path / "var", "reap-stage")
    assert {r.info.status for r in state.values()} == {"KILLED"}


def test_same_pipeline_run_reaps_an_earlier_attempt_from_another_host(tmp_path, monkeypatch):
    """Under Kubeflow a retried task runs in a new pod (another host): a RUNNING run of the
    same stage and the same pipeline run is the dead attempt; other pipeline runs are left."""
    import mlflow

    from components.contracts import tracking
    from components.contracts.settings import Settings

    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("KFP_POD_NAME", raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    cfg = Settings.from_env().mlflow
    experiment_id = tracking.configure(cfg)
    client = mlflow.MlflowClient()
    ids = {}
    for pipeline in ("p-1", "p-2"):
        run = client.create_run(
            experiment_id,
            tags={"stage": "s", "pipeline_run_id": pipeline, tracking.PROCESS_TAG: "pod-x:1:1"},
        )
        ids[pipeline] = run.info.run_id
    monkeypatch.setenv("PIPELINE_RUN_ID", "p-1")  # the retried task's run identity
    with tracking.stage_run(cfg, "s"):
        pass
    assert client.get_run(ids["p-1"]).info.status == "KILLED"
    assert client.get_run(ids["p-2"]).info.status == "RUNNING"


HOLD_TRAIN_XGB = """
import sys, time
import mlflow
real = mlflow.log_params
def slow(*args, **kwargs):
    print("inside", flush=True)
    time.sleep(600)
mlflow.log_params = slow
from components.train_xgb.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_to_a_training_stage_inside_its_run(env, tmp_path):
    """A real train-xgb process stopped while logging: exit 143, one line, run KILLED, no
    model folder published."""
    from faultlib import write_published
    from train_synthetic import features_table

    features = write_published(
        features_table(1500, seed=2, fraud_rate=0.1), tmp_path / "features.parquet"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_TRAIN_XGB, "--in-features", str(features),
         "--out-model", str(tmp_path / "model"), "--n-estimators", "5"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "inside", proc.stderr.read()
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = [line for line in proc.stderr.read().splitlines() if line.startswith("train-xgb:")]
    assert err == ["train-xgb: error: stopped by signal SIGTERM"]
    assert [r.info.status for r in runs(tmp_path / "var", "train-xgb").values()] == ["KILLED"]
    assert not (tmp_path / "model").exists()
