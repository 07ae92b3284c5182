"""Registry faults: nothing unevaluated, corrupt or half-registered is ever promoted.

Real register CLI runs (subprocesses) against an embedded SQLite MLflow registry, on models
and an evaluation made by the real train/evaluate CLIs (``conftest.trained``). The cases
that need a failure at an exact point (a full disk while publishing, SIGTERM, SIGKILL) patch
``publish_bundle`` to fail, signal or kill the process there: the signal and the kill are
real, only their timing is forced.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from faultlib import (
    REPO,
    clean_env,
    error_lines,
    run_stage,
    the_error,
    unpublished_copy,
    write_published,
)
from published import publish_in_place

from components.contracts import storage

pytestmark = pytest.mark.integration

MODEL = "cashier-integrity-risk"


@pytest.fixture(scope="module")
def registry(trained, tmp_path_factory) -> dict:
    """A registry whose champion (version 1) is the good model, registered by the real CLI."""
    root = tmp_path_factory.mktemp("faults-registry")
    env = clean_env(root / "var")
    proc = register(trained, env, root / "first")
    assert proc.returncode == 0, proc.stderr
    assert state(env)["champion"] == "1"
    return {"root": root, "env": env, "var": root / "var"}


def register(trained, env, out: Path, *, xgb=None, iforest=None, evaluation=None, profiles=None):
    return run_stage(
        "register",
        "--in-xgb-model", str(xgb or trained["xgb"]),
        "--in-iforest-model", str(iforest or trained["iforest"]),
        "--in-evaluation", str(evaluation or trained["evaluation"]),
        "--in-profiles", str(profiles or trained["profiles"]),
        "--in-features", str(trained["features"]),
        "--out-bundle", str(out / "bundle"),
        "--out-decision", str(out / "decision.json"),
        "--min-pr-auc", "0", "--min-recall-at-1pct-fpr", "0", "--max-regression", "1",
        env=env,
    )  # fmt: skip


def client_for(env):
    import mlflow

    uri = f"sqlite:///{Path(env['VAR_DIR']).resolve() / 'mlflow' / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def state(env) -> dict:
    """Champion version, every version's gate_decision tag, and register runs' statuses."""
    from mlflow.exceptions import MlflowException

    client = client_for(env)
    try:
        champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        champion = None
    versions = {
        str(v.version): (v.tags or {}).get("gate_decision")
        for v in client.search_model_versions(f"name = '{MODEL}'")
    }
    experiment = client.get_experiment_by_name("cashier-integrity")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'register'")
    return {
        "champion": champion,
        "versions": versions,
        "runs": {r.info.run_id: r.info.status for r in runs},
    }


def assert_refused(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_truncated_xgb_with_good_evaluation_is_refused(trained, registry, tmp_path):
    """Audit case 1: half of xgb.ubj + a good evaluation was registered and made champion."""
    before = state(registry["env"])
    bad = unpublished_copy(trained["xgb"], tmp_path / "xgb")
    data = (bad / "xgb.ubj").read_bytes()
    (bad / "xgb.ubj").write_bytes(data[: len(data) // 2])
    publish_in_place(bad)  # a well-published output of a damaged model
    proc = register(trained, registry["env"], tmp_path / "out", xgb=bad)
    line = assert_refused(proc, str(bad / "xgb.ubj"), "not the model evaluated")
    assert "register-" not in line  # names the input given, not a temp copy
    after = state(registry["env"])
    assert after["champion"] == before["champion"]
    assert after["versions"] == before["versions"]  # no registry write at all
    assert not (tmp_path / "out").exists()


def test_xgb_modified_after_publishing_is_refused(trained, registry, tmp_path):
    """Case 1 without republishing: one byte of the published ``xgb.ubj`` changed in place.
    Storage's sha256 check against ``_SUCCESS`` refuses it before the evaluation is read."""
    bad = tmp_path / "xgb"
    shutil.copytree(trained["xgb"], bad)  # the whole published output: marker + version
    model = Path(storage.open_output(str(bad)).path("xgb.ubj"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1  # same size: only the digest can tell
    model.write_bytes(bytes(data))
    before = state(registry["env"])
    proc = register(trained, registry["env"], tmp_path / "out", xgb=bad)
    assert_refused(proc, str(model), "sha256 does not match _SUCCESS")
    after = state(registry["env"])
    assert after["champion"] == before["champion"] and after["versions"] == before["versions"]
    assert not (tmp_path / "out").exists()


def test_weak_model_with_a_good_models_evaluation_is_refused(trained, registry, tmp_path):
    """Audit case 2: a 1-tree model + the evaluation folder of a good model was ACCEPTED."""
    before = state(registry["env"])
    proc = register(trained, registry["env"], tmp_path / "out", xgb=trained["weak_xgb"])
    assert_refused(proc, "xgb.ubj", "not the model evaluated")
    after = state(registry["env"])
    assert after["champion"] == before["champion"] and after["versions"] == before["versions"]


def test_evaluation_without_model_digests_is_refused(trained, registry, tmp_path):
    evaluation = unpublished_copy(trained["evaluation"], tmp_path / "evaluation")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    del metrics["inputs"]["model_digests"]
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    publish_in_place(evaluation)
    before = state(registry["env"])
    proc = register(trained, registry["env"], tmp_path / "out", evaluation=evaluation)
    assert_refused(proc, "metrics.json", "model_digests")
    assert state(registry["env"])["versions"] == before["versions"]


def test_swapped_forest_is_refused(trained, registry, tmp_path):
    other = unpublished_copy(trained["iforest"], tmp_path / "iforest")
    data = bytearray((other / "forest.npz").read_bytes())
    (other / "forest.npz").write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 1]))
    publish_in_place(other)
    proc = register(trained, registry["env"], tmp_path / "out", iforest=other)
    assert_refused(proc, str(other / "forest.npz"), "not the model evaluated")


def test_negative_profile_count_is_refused_naming_the_input(trained, registry, tmp_path):
    table = storage.read_table(str(trained["profiles"]))
    n = table.column("n")
    table = table.set_column(table.schema.get_field_index("n"), "n", pc.negate(n))
    bad = write_published(table, tmp_path / "profiles.parquet")
    proc = register(trained, registry["env"], tmp_path / "out", profiles=bad)
    line = assert_refused(proc, str(bad), "'n'", "negative")
    assert "register-" not in line


def test_every_version_carries_a_gate_decision(registry):
    versions = state(registry["env"])["versions"]
    assert versions and all(d in ("accepted", "rejected", "aborted") for d in versions.values())


# ---------------------------------------------------------------- in-process: forced timing


@pytest.fixture
def in_registry(registry, monkeypatch):
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "AWS_", "S3_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("VAR_DIR", str(registry["var"]))
    monkeypatch.setenv("PIPELINE_RUN_ID", "standalone")
    return registry


def argv(trained, out: Path) -> list[str]:
    return [
        "--in-xgb-model", str(trained["xgb"]), "--in-iforest-model", str(trained["iforest"]),
        "--in-evaluation", str(trained["evaluation"]), "--in-profiles", str(trained["profiles"]),
        "--in-features", str(trained["features"]),
        "--out-bundle", str(out / "bundle"), "--out-decision", str(out / "decision.json"),
        "--min-pr-auc", "0", "--min-recall-at-1pct-fpr", "0", "--max-regression", "1",
    ]  # fmt: skip


def test_serving_self_test_runs_before_any_registry_write(
    trained, in_registry, tmp_path, monkeypatch, capsys
):
    """A bundle the serving engine scores out of range is refused before MLflow is touched."""
    import dataclasses

    from components.register.__main__ import run
    from serving import scorer

    real = scorer.Scorer.score_many

    def broken(self, rows):
        return [dataclasses.replace(s, risk_score=250.0) for s in real(self, rows)]

    monkeypatch.setattr(scorer.Scorer, "score_many", broken)
    before = state(in_registry["env"])
    assert run(argv(trained, tmp_path / "out")) == 2
    assert "serving self-test" in the_error(capsys.readouterr().err, "register")
    after = state(in_registry["env"])
    assert after["versions"] == before["versions"] and after["runs"] == before["runs"]


def test_failed_promotion_never_moves_champion(trained, in_registry, tmp_path, monkeypatch, capsys):
    """Publishing the bundle fails (disk full) after the version exists: exit 1, champion
    unchanged, the version tagged ``aborted``, the run FAILED."""
    import errno

    import components.register.__main__ as reg

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reg, "publish_bundle", full_disk)
    before = state(in_registry["env"])
    assert reg.run(argv(trained, tmp_path / "out")) == 1
    assert "No space left" in the_error(capsys.readouterr().err, "register")
    after = state(in_registry["env"])
    assert after["champion"] == before["champion"]
    new = set(after["versions"]) - set(before["versions"])
    assert len(new) == 1 and after["versions"][new.pop()] == "aborted"
    new_runs = set(after["runs"]) - set(before["runs"])
    assert [after["runs"][r] for r in new_runs] == ["FAILED"]


def test_sigterm_during_register(trained, in_registry, tmp_path, monkeypatch, capsys):
    """SIGTERM after the version exists: exit 143, run KILLED, version ``aborted``."""
    import components.register.__main__ as reg

    def terminate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(reg, "publish_bundle", terminate)
    before = state(in_registry["env"])
    assert reg.run(argv(trained, tmp_path / "out")) == 143
    assert "SIGTERM" in the_error(capsys.readouterr().err, "register")
    after = state(in_registry["env"])
    assert after["champion"] == before["champion"]
    new = set(after["versions"]) - set(before["versions"])
    assert len(new) == 1 and after["versions"][new.pop()] == "aborted"
    new_runs = set(after["runs"]) - set(before["runs"])
    assert [after["runs"][r] for r in new_runs] == ["KILLED"]


KILL_AFTER_VERSION = """
import os, signal, sys
import components.register.__main__ as reg
reg.publish_bundle = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(reg.run(sys.argv[1:]))
"""


def test_sigkill_during_register_is_cleaned_up_by_the_next_run(trained, registry, tmp_path):
    """SIGKILL cannot be caught: the version (created with its decision tag) and the RUNNING
    run stay; the next register on this host ends the run KILLED and tags the version
    ``aborted``. The champion never moves."""
    before = state(registry["env"])
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_VERSION, *argv(trained, tmp_path / "killed")],
        cwd=REPO, env=registry["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    killed = state(registry["env"])
    assert killed["champion"] == before["champion"]
    new = set(killed["versions"]) - set(before["versions"])
    assert len(new) == 1
    version = new.pop()
    assert killed["versions"][version] in ("accepted", "rejected")  # never untagged
    stale = [r for r in set(killed["runs"]) - set(before["runs"]) if killed["runs"][r] == "RUNNING"]
    assert len(stale) == 1

    proc = register(trained, registry["env"], tmp_path / "next")
    assert proc.returncode == 0, proc.stderr
    after = state(registry["env"])
    assert after["runs"][stale[0]] == "KILLED"
    assert after["versions"][version] == "aborted"
    assert after["champion"] != version
