"""Kubeflow's MLflow integration logs a task's input parameters into the task's run; the
training stages must not log the same keys with other spellings (issue 11).

Under the plugin (KEP-12862) the driver creates a nested run per task and injects
``MLFLOW_RUN_ID``; when the task ends the launcher logs KFP's input parameters into that run
in one ``LogBatch`` with JSON-encoded values (kubeflow/pipelines
``backend/src/v2/common/plugins/mlflow/handler.go`` ``OnTaskEnd`` / ``mapToParams``,
``backend/src/v2/metadata/client.go`` ``FormatExecutionParameters``): ``"scan_avoidance"``
with its quotes, ``1`` for ``1.0``. MLflow refuses a param re-logged with another value,
which loses the launcher's whole batch. Here a real ``mlflow server`` process holds the
runs; the stage runs as the real CLI with the command line and executor input the local
runner builds from the checked-in compiled YAML; the launcher's ``LogBatch`` (Go, needs a
cluster) is reproduced with MLflow's client and Go's JSON spelling.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from published import publish_in_place
from train_synthetic import features_table

from pipelines.runner import executor, ir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SMALL = {"train-xgb": {"n_estimators": 20}, "train-iforest": {"n_estimators": 10}}


def go_json(value: object) -> str:
    """``json.Marshal`` of a ``structpb`` value's ``AsInterface()`` in Go: numbers are
    float64 and print without a fraction when integral (``1`` for 1.0), strings quoted."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return json.dumps(value)


@pytest.mark.parametrize("task_name", ["train-xgb", "train-iforest"])
def test_kfp_and_the_stage_both_log_into_the_task_run(mlflow_server, tmp_path, task_name):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.create_experiment(f"kfp-{task_name}-{tmp_path.name}")
    parent = client.create_run(experiment_id, run_name="cashier-integrity-x7k2p")
    nested = client.create_run(
        experiment_id, run_name=task_name, tags={"mlflow.parentRunId": parent.info.run_id}
    )
    features = tmp_path / "features.parquet"
    pq.write_table(features_table(3000, seed=5, fraud_rate=0.08), features)
    publish_in_place(features)
    task = ir.build_dag(*ir.load_pipeline(REPO / "pipelines" / "cashier_integrity.yaml")).tasks[
        task_name
    ]
    params = {
        name: json.loads(json.dumps(spec.default_value.ListFields()[0][1]))
        for name, spec in task.component_spec.input_definitions.parameters.items()
    } | SMALL[task_name]
    exec_input = executor.build_executor_input(
        task, params, {"features": (str(features), {})}, str(tmp_path / "task")
    )
    cmd = executor.resolve_command(
        task, exec_input, pipeline_name="p", pipeline_root=str(tmp_path), run_id="x7k2p"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PIPELINE_"))},
        "VAR_DIR": str(tmp_path / "var"),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_RUN_ID": nested.info.run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
    }
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    # The launcher's OnTaskEnd: input parameters (Go JSON) and the Metrics artifact's scalars.
    kfp_params = {k: go_json(v) for k, v in exec_input["inputs"]["parameterValues"].items()}
    output = json.loads(Path(exec_input["outputs"]["outputFile"]).read_text())
    scalars = output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    client.log_batch(
        nested.info.run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in scalars.items()],
        params=[Param(k, v) for k, v in kfp_params.items()],
    )  # raises INVALID_PARAMETER_VALUE if the stage logged a key with another value
    run = client.get_run(nested.info.run_id)
    assert kfp_params.items() <= run.data.params.items()  # KFP's spelling kept
    assert run.data.params["n_estimators"] == str(SMALL[task_name]["n_estimators"])
    assert {"feature_version", "n_features"} <= run.data.params.keys()  # the stage's own
    assert run.data.tags["stage"] == task_name and scalars.keys() <= run.data.metrics.keys()


def test_stand_alone_run_logs_every_param(tmp_path, monkeypatch):
    """Without ``MLFLOW_RUN_ID`` nothing is left to Kubeflow, even with an executor input."""
    import mlflow

    from components.contracts import tracking

    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("kfp-params")  # not the active experiment an earlier test left set
    spec = json.dumps({"inputs": {"parameterValues": {"seed": 42}}})
    with mlflow.start_run() as run:
        logged = tracking.log_params({"seed": 42, "n_features": 3}, executor_input=spec)
        monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
        assert tracking.log_params({"seed": 7, "extra": 1}, executor_input=spec) == {"extra": 1}
    assert logged == {"seed": 42, "n_features": 3}
    params = mlflow.MlflowClient(uri).get_run(run.info.run_id).data.params
    assert params == {"seed": "42", "n_features": "3", "extra": "1"}


def test_register_leaves_its_gate_params_to_kubeflow(tmp_path, monkeypatch):
    """register takes no ``{{$}}``: under ``MLFLOW_RUN_ID`` its component inputs (the spec's
    KFP params) are still left to the launcher, which logs ``1`` where we would log ``1.0``."""
    import mlflow

    from components.contracts import tracking
    from components.register.spec import SPEC

    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("kfp-params")  # not the active experiment an earlier test left set
    kfp_inputs = [p.name for p in SPEC.kfp_params]
    assert {"min_pr_auc", "max_regression"} <= set(kfp_inputs)
    with mlflow.start_run() as run:
        mlflow.log_params({"min_pr_auc": "1", "max_regression": "0"})  # the launcher's spelling
        monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
        logged = tracking.log_params(
            {"min_pr_auc": 1.0, "max_regression": 0.0, "bundle_sha256": "abc"},
            kfp_inputs=kfp_inputs,
        )
    assert logged == {"bundle_sha256": "abc"}
    params = mlflow.MlflowClient(uri).get_run(run.info.run_id).data.params
    assert params == {"min_pr_auc": "1", "max_regression": "0", "bundle_sha256": "abc"}
