"""train-xgb and train-iforest CLIs as real subprocesses: model folders, metrics JSON, KFP
executor output, MLflow runs (SQLite store in a temp VAR_DIR), S3 output on moto's server,
and a failing MLflow server that must fail the stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import skops.io
import xgboost as xgb
from published import publish_in_place
from train_synthetic import features_table

from components.contracts import storage
from components.contracts.features import ANOMALY_FEATURES, FEATURE_NAMES
from components.contracts.forest import ForestArrays
from components.train_iforest.logic import SKOPS_TRUSTED_TYPES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def features_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("features") / "features.parquet"
    pq.write_table(features_table(5000, seed=7, fraud_rate=0.08), path)
    return publish_in_place(path)  # stages refuse unpublished inputs


def executor_input(tmp_path: Path) -> tuple[str, Path]:
    """A minimal KFP executor input declaring the ``metrics`` and ``model`` outputs.

    ``outputs.outputFile`` sits in folders that do not exist yet, like the backend driver's
    ``<task root>/output_metadata.json`` under the launcher's ``/s3/...`` mount.
    """
    output_file = tmp_path / "s3" / "bucket" / "train" / "salt" / "output_metadata.json"
    spec = {
        "inputs": {},
        "outputs": {
            "artifacts": {
                name: {
                    "artifacts": [
                        {
                            "name": name,
                            "type": {"schemaTitle": f"system.{kind}"},
                            "uri": (tmp_path / "kfp" / name).as_uri(),
                            "metadata": {},
                        }
                    ]
                }
                for name, kind in (("metrics", "Metrics"), ("model", "Model"))
            },
            "outputFile": str(output_file),
        },
    }
    return json.dumps(spec), output_file


def parse_executor_output(path: Path):
    """The file parsed strictly as the launcher does (``protojson.Unmarshal`` of
    ``ExecutorOutput``): an unknown field or a wrong type fails."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    return json_format.Parse(path.read_text(), pipeline_spec_pb2.ExecutorOutput())


def run_cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tracking_uri(local_env):
    """The stage's SQLite store, also set as MLflow's global URI (``runs:/`` loads use it)."""
    import mlflow

    uri = f"sqlite:///{local_env / 'mlflow' / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    yield uri
    mlflow.set_tracking_uri(previous)


def mlflow_runs(uri: str, stage: str):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cashier-integrity")
    return client, client.search_runs([experiment.experiment_id], f"tags.stage = '{stage}'")


def test_train_xgb_cli(tracking_uri, tmp_path, features_file):
    out, metrics_file = tmp_path / "model", tmp_path / "metrics.json"
    ex_in, ex_out = executor_input(tmp_path)
    proc = run_cli(
        "components.train_xgb", "--in-features", str(features_file), "--out-model", str(out),
        "--out-metrics", str(metrics_file), "--n-estimators", "60", "--max-depth", "3",
        "--early-stopping-rounds", "10", "--executor-input", ex_in,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    published = storage.open_output(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", published.version]
    out = Path(published.path())  # the committed version's folder
    assert sorted(p.name for p in out.iterdir()) == ["loto", "meta.json", "xgb.ubj"]
    meta = json.loads((out / "meta.json").read_text())
    booster = xgb.Booster(model_file=str(out / "xgb.ubj"))
    assert booster.feature_names == list(FEATURE_NAMES) == meta["feature_names"]
    assert booster.num_boosted_rounds() == meta["best_iteration"] + 1
    folds = meta["loto"]
    assert folds and all(f["dropped_rows"]["train"] > 0 for f in folds.values())
    assert meta["params"]["n_estimators"] == 60
    assert published.files.keys() == {
        "meta.json",
        "xgb.ubj",
        *(f["model_file"] for f in folds.values()),
    }

    metrics = storage.read_json(str(metrics_file))
    assert 0.5 < metrics["valid_pr_auc"] <= 1 and 0 <= metrics["valid_recall_at_1pct_fpr"] <= 1
    assert metrics["valid_pr_auc"] == meta["metrics"]["valid"]["pr_auc"]
    from google.protobuf import json_format

    parsed = parse_executor_output(ex_out)
    artifact = parsed.artifacts["metrics"].artifacts[0]
    assert artifact.name == "metrics" and json_format.MessageToDict(artifact.metadata) == metrics

    client, runs = mlflow_runs(tracking_uri, "train-xgb")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_id == meta["mlflow_run_id"]
    assert run.data.metrics["valid_pr_auc"] == pytest.approx(metrics["valid_pr_auc"])
    assert run.data.params["loto_rounds"] == "80"
    import mlflow.xgboost

    logged = mlflow.xgboost.load_model(f"runs:/{run.info.run_id}/xgb")
    dm = xgb.DMatrix(np.zeros((2, len(FEATURE_NAMES))), feature_names=list(FEATURE_NAMES))
    np.testing.assert_array_equal(logged.predict(dm), booster.predict(dm))
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "loto")}
    assert paths == {f["model_file"] for f in folds.values()}


def test_train_iforest_cli(tracking_uri, tmp_path, features_file):
    out, metrics_file = tmp_path / "model", tmp_path / "metrics.json"
    ex_in, ex_out = executor_input(tmp_path)
    proc = run_cli(
        "components.train_iforest", "--in-features", str(features_file), "--out-model", str(out),
        "--out-metrics", str(metrics_file), "--n-estimators", "40", "--max-samples", "256",
        "--executor-input", ex_in,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    published = storage.open_output(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", published.version]
    out = Path(published.path())  # the committed version's folder
    assert sorted(p.name for p in out.iterdir()) == ["forest.npz", "iforest.skops", "meta.json"]
    meta = json.loads((out / "meta.json").read_text())
    forest = ForestArrays.load(out / "forest.npz")
    model = skops.io.load(out / "iforest.skops", trusted=list(SKOPS_TRUSTED_TYPES))
    X = np.random.default_rng(0).normal(size=(300, len(FEATURE_NAMES)))
    # The arrays score the full feature vector; the sklearn model sees ANOMALY_FEATURES only.
    subset = [FEATURE_NAMES.index(n) for n in ANOMALY_FEATURES]
    np.testing.assert_array_equal(forest.score_samples(X), model.score_samples(X[:, subset]))
    assert forest.n_trees == meta["n_trees"] == 40
    assert meta["feature_names"] == list(ANOMALY_FEATURES)
    assert meta["score_stats"]["valid"]["q50"] < 0

    metrics = storage.read_json(str(metrics_file))
    assert metrics["valid_roc_auc"] == meta["metrics"]["valid"]["roc_auc"]
    artifact = parse_executor_output(ex_out).artifacts["metrics"].artifacts[0]
    assert dict(artifact.metadata) == metrics

    client, runs = mlflow_runs(tracking_uri, "train-iforest")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    assert {a.path for a in client.list_artifacts(run_id, "forest")} == {
        "forest/forest.npz",
        "forest/iforest.skops",
    }
    import mlflow.sklearn

    logged = mlflow.sklearn.load_model(f"runs:/{run_id}/iforest")  # skops, no pickle
    np.testing.assert_array_equal(
        logged.score_samples(X[:, subset]), model.score_samples(X[:, subset])
    )


def test_train_iforest_cli_s3_in_and_out(local_env, s3_bucket, tmp_path, features_file):
    """Features read from and the model folder published to moto's S3 server on loopback."""
    features_uri = f"s3://{s3_bucket}/features/features.parquet"
    storage.publish_table(storage.read_table(str(features_file)), features_uri)
    out = f"s3://{s3_bucket}/runs/1/iforest"
    proc = run_cli(
        "components.train_iforest", "--in-features", features_uri, "--out-model", out,
        "--out-metrics", f"s3://{s3_bucket}/runs/1/metrics.json", "--n-estimators", "10",
        "--max-samples", "64",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    version = storage.open_output(out).version
    assert {"runs/1/iforest/_SUCCESS"} | {
        f"runs/1/iforest/{version}/{n}" for n in ("forest.npz", "iforest.skops", "meta.json")
    } <= keys
    assert storage.is_complete_dataset(out)
    assert ForestArrays.load(storage.open_output(out).uri_of("forest.npz")).n_trees == 10
    assert storage.read_json(f"s3://{s3_bucket}/runs/1/metrics.json")["n_train"] == 3000


def test_unreachable_mlflow_fails_the_stage_without_output(local_env, tmp_path, features_file):
    from tests.conftest import free_port

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    out, metrics_file = tmp_path / "model", tmp_path / "metrics.json"
    proc = run_cli(
        "components.train_iforest", "--in-features", str(features_file), "--out-model", str(out),
        "--out-metrics", str(metrics_file), "--n-estimators", "5", "--max-samples", "64", env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"train-iforest: error: MLflow logging of train-iforest failed "
        f"(tracking URI {env['MLFLOW_TRACKING_URI']})"
    ), proc.stderr
    assert not out.exists() and not metrics_file.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_bad_input_exits_2_with_one_line(local_env, tmp_path):
    out = tmp_path / "model"
    missing = tmp_path / "nope.parquet"
    proc = run_cli("components.train_xgb", "--in-features", str(missing), "--out-model", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"train-xgb: error: {missing}: no such file or folder"
    )
    assert not out.exists()


def test_train_iforest_logs_to_a_real_mlflow_server(
    local_env, mlflow_server, tmp_path, features_file
):
    """Tracking over HTTP with artifacts proxied by the server (``mlflow-artifacts:``)."""
    import uuid

    from mlflow import MlflowClient

    experiment = f"train-cli-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_ARTIFACT_LOCATION": f"mlflow-artifacts:/{experiment}",
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "PIPELINE_RUN_ID": "run-123",
    }
    out = tmp_path / "model"
    proc = run_cli(
        "components.train_iforest", "--in-features", str(features_file), "--out-model", str(out),
        "--n-estimators", "5", "--max-samples", "64", "--pipeline-run-id", "kfp-job-42", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["pipeline_run_id"] == "kfp-job-42"  # the flag wins over the env
    assert run.data.tags["stage"] == "train-iforest"
    assert run.info.run_id == storage.open_output(str(out)).read_json("meta.json")["mlflow_run_id"]
    local = client.download_artifacts(run.info.run_id, "forest/forest.npz", str(tmp_path))
    assert ForestArrays.load(local).n_trees == 5


def test_train_iforest_logs_into_the_run_kubeflows_mlflow_plugin_created(
    local_env, tmp_path, features_file
):
    """Kubeflow's MLflow plugin (KEP-12862) creates a nested run per task and injects
    MLFLOW_RUN_ID / MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID; the stage logs into that run.
    The driver side is emulated here (no cluster): the experiment, parent and nested runs are
    created the way ``backend/src/v2/common/plugins/mlflow/handler.go`` ``OnTaskStart`` does,
    in a SQLite store."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'kfp-mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(
        "kfp-experiment", artifact_location=(tmp_path / "kfp-artifacts").as_uri()
    )
    parent = client.create_run(experiment_id, run_name="cashier-integrity-x7k2p")
    nested = client.create_run(
        experiment_id,
        run_name="train-iforest",
        tags={"mlflow.parentRunId": parent.info.run_id},
    )
    pod = "cashier-integrity-x7k2p-retry-system-container-impl-2911584743"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_RUN_ID": nested.info.run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "KFP_POD_NAME": pod,
    }
    out = tmp_path / "model"
    proc = run_cli(
        "components.train_iforest", "--in-features", str(features_file), "--out-model", str(out),
        "--n-estimators", "5", "--max-samples", "64", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    assert (
        storage.open_output(str(out)).read_json("meta.json")["mlflow_run_id"] == nested.info.run_id
    )
    (run,) = client.search_runs([experiment_id], "tags.stage = 'train-iforest'")
    assert run.info.run_id == nested.info.run_id
    assert run.info.run_name == "train-iforest"  # the plugin's name is kept
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["pipeline_run_id"] == "cashier-integrity-x7k2p"
    assert run.data.tags["kfp_pod_name"] == pod
    assert run.data.params["n_estimators"] == "5" and "valid_pr_auc" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "forest")]
    # no second run anywhere: not beside the nested one, not in our own experiment
    assert len(client.search_runs([experiment_id])) == 2
    assert client.get_experiment_by_name("cashier-integrity") is None
