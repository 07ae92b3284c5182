"""Local runner: executor input and placeholders resolved by kfp.local, as the launcher does."""

import json
import sys

import pytest
from kfp import compiler, dsl

from pipelines.runner import executor, ir


@dsl.container_component
def _metric_step(
    features: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    rows: int = 10,
    rate: float = 0.5,
    name: str = "x",
):
    return dsl.ContainerSpec(
        image="ghcr.io/x/step:1",
        command=["python", "-m", "components.step"],
        args=[
            "--in", features.path, "--out-model", model.path, "--out-metrics", metrics.path,
            "--rows", rows, "--rate", rate, "--name", name,
            "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
            "--executor-output", dsl.PIPELINE_TASK_EXECUTOR_OUTPUT_PATH_PLACEHOLDER,
            "--job", dsl.PIPELINE_JOB_ID_PLACEHOLDER, "--task", dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
        ],
    )  # fmt: skip


@dsl.container_component
def _source(out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image="x", command=["true"], args=[out.path])


@dsl.pipeline(name="ph")
def _pipe(rows: int = 1000):
    src = _source()
    _metric_step(features=src.outputs["out"], rows=rows)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> ir.TaskNode:
    path = tmp_path_factory.mktemp("ph") / "p.yaml"
    compiler.Compiler().compile(_pipe, str(path))
    return ir.build_dag(*ir.load_pipeline(path)).tasks["metric-step"]


def test_command_resolves_paths_params_and_executor_placeholders(task, tmp_path):
    root = tmp_path / "run" / "metric-step"
    exec_input = executor.build_executor_input(
        task,
        {"rows": 1000, "rate": 0.5, "name": "x"},
        {"features": ("/data/features.parquet", {"rows": 5})},
        str(root),
    )
    cmd = executor.resolve_command(
        task, exec_input, pipeline_name="ph", pipeline_root=str(tmp_path), run_id="run-1"
    )
    args = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert cmd[:3] == [sys.executable, "-m", "components.step"]
    assert args["--in"] == "/data/features.parquet"
    assert args["--out-model"] == str(root / "model")
    assert args["--out-metrics"] == str(root / "metrics")
    assert args["--rows"] == "1000"  # an int stays an int, not "1000.0"
    assert args["--rate"] == "0.5"
    assert args["--executor-output"] == str(root / "executor_output.json")
    assert args["--job"] == "run-1" and args["--task"] == "metric-step"
    spec = json.loads(args["--executor-input"])
    out = spec["outputs"]["artifacts"]["metrics"]["artifacts"][0]
    assert out["uri"] == str(root / "metrics")
    assert out["type"]["schemaTitle"] == "system.Metrics"
    feature_in = spec["inputs"]["artifacts"]["features"]["artifacts"][0]
    assert feature_in["metadata"] == {"rows": 5}
    assert spec["inputs"]["parameterValues"]["rows"] == 1000


def test_executor_output_metadata_is_read_back(task, tmp_path):
    from components.contracts import kfp_io

    root = tmp_path / "t"
    root.mkdir()
    exec_input = executor.build_executor_input(
        task, {"rows": 1, "rate": 0.5, "name": "x"}, {"features": ("/f", {})}, str(root)
    )
    kfp_io.write_executor_output(
        json.dumps(exec_input), exec_input["outputs"]["outputFile"], {"metrics": {"pr_auc": 0.91}}
    )
    metadata, params = executor.read_executor_output(task, exec_input)
    assert metadata == {"metrics": {"pr_auc": 0.91}}
    assert params == {}


def test_missing_executor_output_means_no_metadata(task, tmp_path):
    exec_input = executor.build_executor_input(
        task, {"rows": 1, "rate": 0.5, "name": "x"}, {"features": ("/f", {})}, str(tmp_path)
    )
    assert executor.read_executor_output(task, exec_input) == ({}, {})


def test_tail_returns_last_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert executor.tail(log, 3) == "line 97\nline 98\nline 99"
