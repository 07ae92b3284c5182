"""The real pipeline (all seven stage CLIs) through the local runner, on small data.

One full run (local pipeline root, SQLite MLflow in a temp VAR_DIR), then a rerun that is
all cache hits except tasks whose caching is off in the YAML (register's side effects), then
``--rerun-from evaluate``, then a run against another tracking URI (the MLflow stages rerun).
"""

import os
from pathlib import Path

import pytest

from components.contracts import storage
from components.contracts.settings import Settings
from pipelines.compile import DEFAULT_PIPELINE_YAML
from pipelines.runner import Runner, RunOptions, ir, record
from pipelines.runner.summary import run_summary

pytestmark = pytest.mark.e2e

STAGES = ("datagen", "split", "features", "train-xgb", "train-iforest", "evaluate", "register")
PARAMS = {"rows": "20000", "xgb_n_estimators": "80", "iforest_n_estimators": "50"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    var = tmp_path_factory.mktemp("e2e") / "var"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAR_DIR", str(var))
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_LOCATION", "PIPELINE_ROOT",
                    "S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # fmt: skip
            mp.delenv(key, raising=False)
        yield var


@pytest.fixture(scope="module")
def first_run(env) -> record.RunRecord:
    return Runner(Settings.from_env(), out=None).run(
        DEFAULT_PIPELINE_YAML, RunOptions(params=PARAMS)
    )


def test_full_pipeline_runs_end_to_end(env, first_run):
    rec = first_run
    assert rec.status == record.RUN_SUCCEEDED
    assert list(rec.tasks) == [
        "datagen",
        "split",
        "features",
        "train-iforest",
        "train-xgb",
        "evaluate",
        "register",
    ]
    off = _caching_off()
    assert off == {"register"}  # side effects on the MLflow registry
    assert {n: t.cache for n, t in rec.tasks.items()} == {
        n: "off" if n in off else "miss" for n in rec.tasks
    }
    assert rec.parameters["rows"] == 20000
    # lineage: every input is an upstream output with the same digest
    for task in rec.tasks.values():
        for art in task.inputs.values():
            producer = rec.tasks[art["producer"]]
            assert art["digest"] in {o["digest"] for o in producer.outputs.values()}
    # executor-output metadata (KFP Metrics / ClassificationMetrics) is recorded
    evaluate = rec.tasks["evaluate"].outputs
    assert isinstance(evaluate["metrics"]["metadata"].get("blend_pr_auc"), float)
    assert "confusionMatrix" in evaluate["classification_metrics"]["metadata"]
    assert rec.tasks["train-xgb"].outputs["metrics"]["metadata"]
    model_dir = Path(rec.tasks["train-xgb"].outputs["model"]["uri"])
    assert storage.open_output(str(model_dir)).has("xgb.ubj")  # a published model folder
    decision = storage.read_json(rec.tasks["register"].outputs["decision"]["uri"])
    assert decision["model_version"]
    summary = run_summary(rec, Settings.from_env())
    assert "blend_pr_auc" in summary and f"version {decision['model_version']}" in summary
    # every MLflow stage run is tagged with this run's id (passed as {{$.pipeline_job_uuid}})
    import mlflow

    mlflow.set_tracking_uri(Settings.from_env().mlflow.tracking_uri)
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.pipeline_run_id = '{rec.run_id}'"
    )
    assert sorted(runs["tags.stage"]) == ["evaluate", "register", "train-iforest", "train-xgb"]
    # tasks saw Settings env
    logs = Path(rec.tasks["register"].log).read_text()
    assert "Traceback" not in logs
    assert os.environ["VAR_DIR"] == str(env)


def _caching_off() -> set[str]:
    dag = ir.build_dag(*ir.load_pipeline(DEFAULT_PIPELINE_YAML))
    return {name for name, task in dag.tasks.items() if not task.cache_enabled}


def test_second_run_is_all_cache_hits_but_side_effects(env, first_run):
    rec = Runner(Settings.from_env(), out=None).run(
        DEFAULT_PIPELINE_YAML, RunOptions(params=PARAMS)
    )
    off = _caching_off()
    assert {n: t.cache for n, t in rec.tasks.items()} == {
        n: "off" if n in off else "hit" for n in STAGES
    }
    assert all(rec.tasks[n].attempts == 0 for n in STAGES if n not in off)
    if "register" in off:  # registered again, in this run
        decision = storage.read_json(rec.tasks["register"].outputs["decision"]["uri"])
        first = storage.read_json(first_run.tasks["register"].outputs["decision"]["uri"])
        assert int(decision["model_version"]) > int(first["model_version"])
    else:
        assert rec.tasks["register"].outputs == first_run.tasks["register"].outputs
        assert "nothing registered in this run" in run_summary(rec, Settings.from_env())


def test_rerun_from_evaluate_reruns_exactly_evaluate_and_register(env, first_run):
    rec = Runner(Settings.from_env(), out=None).run(
        DEFAULT_PIPELINE_YAML, RunOptions(params=PARAMS, rerun_from="evaluate")
    )
    ran = {n for n, t in rec.tasks.items() if t.cache != "hit"}
    assert ran == {"evaluate", "register"}
    assert all(rec.tasks[n].attempts >= 1 for n in ran)
    assert (
        rec.tasks["evaluate"].outputs["metrics"]["uri"]
        != first_run.tasks["evaluate"].outputs["metrics"]["uri"]
    )


def test_another_tracking_uri_reruns_the_mlflow_stages_and_registers_there(
    env, first_run, tmp_path, monkeypatch
):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_LOCATION", (tmp_path / "artifacts").as_uri())
    rec = Runner(Settings.from_env(), out=None).run(
        DEFAULT_PIPELINE_YAML, RunOptions(params=PARAMS)
    )
    off = _caching_off()
    assert {n: t.cache for n, t in rec.tasks.items()} == {
        "datagen": "hit", "split": "hit", "features": "hit",
        "train-xgb": "miss", "train-iforest": "miss", "evaluate": "miss",
        "register": "off" if "register" in off else "miss",
    }  # fmt: skip
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    decision = storage.read_json(rec.tasks["register"].outputs["decision"]["uri"])
    version = client.get_model_version(decision["model_name"], decision["model_version"])
    assert version.tags["pipeline_run_id"] == rec.run_id
    if decision["alias_moved"]:
        assert f"alias {decision['alias']} moved" in run_summary(rec, Settings.from_env())
