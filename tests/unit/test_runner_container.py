"""pipelines/runner/container.py without an engine: how a task becomes a container.

The Docker calls themselves run for real in tests/containers/ (skipped without an engine);
here the pure parts: command/args split, environment, mounts, the kill path.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from components.contracts.settings import Settings
from pipelines.runner import container, executor, ir
from pipelines.runner.ir import PipelineError

REPO_YAML = Path(__file__).resolve().parents[2] / "pipelines/cashier_integrity.yaml"


@pytest.fixture(scope="module")
def dag():
    spec, platform = ir.load_pipeline(REPO_YAML)
    return ir.build_dag(spec, platform)


def test_command_replaces_the_entrypoint_and_args_are_the_cmd(dag, tmp_path):
    task = dag.tasks["train-xgb"]
    backend = container.ContainerBackend(Settings.from_env(), client=mock.MagicMock())
    exec_input = executor.build_executor_input(
        task,
        {"n_estimators": 3, "max_depth": 2, "learning_rate": 0.1, "subsample": 1.0,
         "colsample_bytree": 1.0, "min_child_weight": 1.0, "early_stopping_rounds": 2,
         "loto_rounds": 2, "loto_learning_rate": 0.3, "loto_legit_fraction": 1.0, "seed": 1},
        {"features": (str(tmp_path / "in/features"), {})},
        str(tmp_path / "task"),
    )  # fmt: skip
    argv = backend.resolve_command(
        task, exec_input, pipeline_name="p", pipeline_root=str(tmp_path), run_id="r1"
    )
    assert argv.entrypoint == list(task.container.command)  # python -m components.train_xgb
    assert argv.entrypoint[0] == "python"  # the image's python, not the host interpreter
    assert argv.cmd[argv.cmd.index("--in-features") + 1] == str(tmp_path / "in/features")
    assert list(argv) == argv.entrypoint + argv.cmd


def test_environment_passes_only_tracking_s3_and_run_identity(dag, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.delenv("MLFLOW_ARTIFACT_LOCATION", raising=False)
    monkeypatch.setenv("MODEL_NAME", "risk-x")
    settings = Settings.from_env()
    env = container.container_env(
        dag.tasks["register"],
        {"PATH": "/host/bin", "PYTHONPATH": "/repo", "AWS_REGION": "eu-west-1",
         "PIPELINE_RUN_ID": "r1", "HOME": "/root", "KFP_POD_NAME": "pod"},
        settings,
    )  # fmt: skip
    assert "PATH" not in env and "PYTHONPATH" not in env and "HOME" not in env
    assert env["AWS_REGION"] == "eu-west-1" and env["PIPELINE_RUN_ID"] == "r1"
    assert env["KFP_POD_NAME"] == "pod"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["MODEL_NAME"] == "risk-x"  # settings the stages read, not only MLFLOW_*


@pytest.mark.parametrize(
    ("uri", "local"),
    [("sqlite:////data/mlflow/mlflow.db", "/data/mlflow"), ("file:///data/art", "/data/art"),
     ("http://127.0.0.1:5000", None), ("mlflow-artifacts:/exp", None), ("s3://b/p", None),
     ("/data/x", "/data/x")],
)  # fmt: skip
def test_only_local_stores_are_mounted(uri, local):
    assert container._local_path(uri) == local


def test_volumes_task_folder_rw_inputs_ro_same_paths(tmp_path):
    exec_input = {
        "outputs": {"outputFile": str(tmp_path / "run/task/executor_output.json")},
        "inputs": {"artifacts": {
            "a": {"artifacts": [{"uri": str(tmp_path / "run/up/a")}]},
            "b": {"artifacts": [{"uri": "/elsewhere/b"}]},
        }},
    }  # fmt: skip
    vols = container.volumes_for(exec_input, ["/data/mlflow"])
    assert vols[str(tmp_path / "run/task")] == {"bind": str(tmp_path / "run/task"), "mode": "rw"}
    assert vols["/data/mlflow"]["mode"] == "rw"
    assert vols[str(tmp_path / "run/up/a")] == {"bind": str(tmp_path / "run/up/a"), "mode": "ro"}
    assert vols["/elsewhere/b"]["mode"] == "ro"


def test_the_runner_kill_path_kills_the_container():
    """executor._kill_tree (the runner's Ctrl-C path) reaches the container, not a host pgid."""
    box = mock.MagicMock()
    executor._kill_tree(container.ContainerHandle(box))
    box.kill.assert_called_once()


def test_missing_images_are_one_line_naming_make_images(dag):
    from docker.errors import ImageNotFound

    client = mock.MagicMock()
    client.images.get.side_effect = ImageNotFound("nope")
    backend = container.ContainerBackend(Settings.from_env(), client=client)
    with pytest.raises(PipelineError, match=r"not present locally: .*`make images`") as err:
        backend.check(dag)
    assert "\n" not in str(err.value)
    client.images.pull.assert_not_called()


def test_make_writable_lets_another_uid_write(tmp_path):
    (tmp_path / "d/sub").mkdir(parents=True)
    (tmp_path / "d/sub/f").write_text("x")
    container.make_writable(tmp_path / "d")
    assert (tmp_path / "d/sub").stat().st_mode & 0o777 == 0o777
    assert (tmp_path / "d/sub/f").stat().st_mode & 0o666 == 0o666
