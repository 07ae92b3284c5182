"""SIGKILL at several points of datagen, train-xgb, train-iforest and evaluate (issue 11).

split, features and register have theirs in ``tests/integration/test_faults_publish.py`` and
``test_registry_faults.py``. Each case here runs the real stage CLI once (the published "old"
set), then kills re-runs of it with other parameters at one point after another, then runs
it once more:

* during staging (datagen: after its first chunk) or inside the stage's MLflow run (the
  training stages and evaluate: at ``mlflow.log_metrics``), before anything is verified;
* ``staged``: every output staged and verified, no marker switched;
* ``switch-1``: between the first and the second marker switch (stages with two outputs);
* ``switched``: after the last switch, before the replaced versions are collected.

After each kill before ``switched`` the old set reads back byte for byte (through storage's
readers, which verify every sha256 against the marker); after ``switched`` the new set does.
Every output folder has its marker at all times. The last run must leave each output with
exactly its marker and one version (the dead attempts' staging collected) and no MLflow run
RUNNING: a run killed inside MLflow logging is ended KILLED by the next run of the stage.

The kill is delivered by the process itself at the named point (``storage.FAULT_ENV``, or a
patched ``mlflow.log_metrics``): a ``kill -9`` from outside at that instant has the same
effect, without a race. Processes, signals, files and the SQLite MLflow store are real.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from faultlib import REPO, clean_env, run_stage, runs

from components.contracts import storage

pytestmark = pytest.mark.integration

KILL_IN_MLFLOW = """
import os, runpy, signal, sys
import mlflow
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
mlflow.log_metrics = die
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def killed_at(point: str, stage: str, *args: str, env: dict[str, str]) -> None:
    """Run ``stage`` until it SIGKILLs itself at ``point`` (``mlflow`` or a storage point)."""
    if point == "mlflow":
        cmd = [sys.executable, "-c", KILL_IN_MLFLOW, f"components.{stage}", *args]
    else:
        cmd = [sys.executable, "-m", f"components.{stage}", *args]
        env = {**env, storage.FAULT_ENV: point}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-3000:])


def snapshot(outputs: list[Path]) -> dict[str, tuple[str, dict[str, str]]]:
    """Each output's committed commit and the sha256 of every file, read through storage."""
    state = {}
    for path in outputs:
        out = storage.open_output(str(path))
        files = {rel: hashlib.sha256(out.read_bytes(rel)).hexdigest() for rel in out.files}
        state[path.name] = (out.commit, files)
    return state


def assert_markers_only(outputs: list[Path]) -> None:
    """Nothing beside the outputs, and every output folder carries its marker."""
    assert sorted(p.name for p in outputs[0].parent.iterdir()) == sorted(p.name for p in outputs)
    for path in outputs:
        assert (path / storage.SUCCESS_MARKER).is_file(), path


def kill_sequence(stage, args_for, outputs, points, env, var: Path) -> None:
    """The case described in the module docstring; ``args_for(k)`` are the k-th run's args."""
    ok = run_stage(stage, *args_for(0), env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    old = snapshot(outputs)
    for k, point in enumerate(points, start=1):
        killed_at(point, stage, *args_for(k), env=env)
        assert_markers_only(outputs)
        now = snapshot(outputs)
        if point == "switched":
            assert {c for c, _ in now.values()} != {c for c, _ in old.values()}
            assert len({c for c, _ in now.values()}) == 1  # one complete new set
        else:
            assert now == old, point
    last = run_stage(stage, *args_for(len(points) + 1), env=env)
    assert last.returncode == 0, last.stderr[-3000:]
    assert_markers_only(outputs)
    for path in outputs:
        marker = storage.read_json(str(path / storage.SUCCESS_MARKER))
        assert sorted(p.name for p in path.iterdir()) == sorted(
            [storage.SUCCESS_MARKER, marker["version"]]
        ), path
    if stage != "datagen":
        name = stage.replace("_", "-")
        statuses = [r.info.status for r in runs(var, name).values()]
        assert "RUNNING" not in statuses, statuses
        if "mlflow" in points:
            reaped = [r for r in runs(var, name).values() if r.info.status == "KILLED"]
            assert reaped and all("reaped" in r.data.tags["killed_reason"] for r in reaped)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return clean_env(tmp_path / "var")


def test_sigkill_during_datagen(tmp_path, env):
    out = tmp_path / "out" / "transactions"

    def args(k: int) -> list[str]:
        return ["--out-transactions", str(out), "--rows", "3000", "--days", "5",
                "--stores", "2", "--cashiers-per-store", "3", "--chunk-rows", "1000",
                "--seed", str(k + 1)]  # fmt: skip

    kill_sequence("datagen", args, [out], ["write-1", "staged", "switched"], env, tmp_path / "var")


@pytest.mark.parametrize(
    ("stage", "extra"),
    [
        ("train_xgb", ["--n-estimators", "5", "--max-depth", "2", "--nthread", "1"]),
        ("train_iforest", ["--n-estimators", "10"]),
    ],
)
def test_sigkill_during_training(trained, tmp_path, env, stage, extra):
    model, metrics = tmp_path / "out" / "model", tmp_path / "out" / "metrics.json"

    def args(k: int) -> list[str]:
        return ["--in-features", str(trained["features"]), "--out-model", str(model),
                "--out-metrics", str(metrics), *extra, "--seed", str(k + 1)]  # fmt: skip

    points = ["mlflow", "staged", "switch-1", "switched"]
    kill_sequence(stage, args, [model, metrics], points, env, tmp_path / "var")


def test_sigkill_during_evaluate(trained, tmp_path, env):
    out = tmp_path / "out"
    outputs = [out / "evaluation", out / "metrics.json", out / "classification.json"]

    def args(k: int) -> list[str]:
        return ["--in-features", str(trained["features"]),
                "--in-xgb-model", str(trained["xgb"]),
                "--in-iforest-model", str(trained["iforest"]),
                "--out-evaluation", str(outputs[0]), "--out-metrics", str(outputs[1]),
                "--out-classification-metrics", str(outputs[2]),
                "--high-precision-target", str(0.9 - 0.05 * k)]  # fmt: skip

    points = ["mlflow", "staged", "switch-1", "switch-2", "switched"]
    kill_sequence("evaluate", args, outputs, points, env, tmp_path / "var")
