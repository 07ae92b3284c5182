"""What the checked-in pipeline YAML asks of Kubernetes: resources per task, no cache for
register, ConfigMap/Secret env on every task (test_pipeline_compile checks the YAML is a
fresh compile). No cluster here: these check the compiled spec the KFP backend consumes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines import pipeline
from pipelines.compile import DEFAULT_PIPELINE_YAML
from pipelines.components import STAGES

REPO = Path(__file__).resolve().parents[2]
_UNITS = {"Ki": 2**-10, "Mi": 1, "Gi": 2**10, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}


def mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity).groups()
    return float(number) * _UNITS[unit] if unit else float(number) / 2**20


def cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.fixture(scope="module")
def docs() -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(DEFAULT_PIPELINE_YAML.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def executor_of(spec: dict, task: str) -> str:
    ref = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    return spec["components"][ref]["executorLabel"]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_task_requests_and_limits_cpu_and_memory_from_the_table(docs, stage):
    spec, _ = docs
    res = spec["deploymentSpec"]["executors"][executor_of(spec, stage.name)]["container"]
    res = res["resources"]
    want = pipeline.RESOURCES[stage.module]
    assert res["resourceCpuRequest"] == want.cpu_request
    assert res["resourceCpuLimit"] == want.cpu_limit
    assert res["resourceMemoryRequest"] == want.memory_request
    assert res["resourceMemoryLimit"] == want.memory_limit
    # the 1M-row peak fits in the request; the limit leaves headroom; request <= limit
    assert mib(want.memory_request) >= want.peak_mib
    assert mib(want.memory_limit) >= 1.5 * want.peak_mib
    assert cpu(want.cpu_request) <= cpu(want.cpu_limit)


def test_the_table_carries_the_benchmark_peaks():
    peaks = {k: v.peak_mib for k, v in pipeline.RESOURCES.items()}
    assert peaks["datagen"] == 539 and peaks["split"] == 757 and peaks["features"] == 509
    assert peaks["train_xgb"] >= 2.6 * 1024 - 1 and peaks["evaluate"] >= 2.1 * 1024 - 1
    assert set(peaks) == {s.module for s in STAGES}


def test_only_register_is_never_cached(docs):
    spec, _ = docs
    tasks = spec["root"]["dag"]["tasks"]
    cached = {name for name, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == {s.name for s in STAGES} - {"register"}


def test_every_task_reads_the_configmap_and_secret(docs):
    spec, executors = docs
    for stage in STAGES:
        config = executors[executor_of(spec, stage.name)]
        (cm,) = config["configMapAsEnv"]
        assert cm["configMapName"] == pipeline.CONFIG_MAP and cm["optional"] is False
        assert {e["configMapKey"]: e["envVar"] for e in cm["keyToEnv"]} == pipeline.CONFIG_MAP_ENV
        (secret,) = config["secretAsEnv"]
        assert secret["secretName"] == pipeline.S3_SECRET and secret["optional"] is True
        assert {e["secretKey"]: e["envVar"] for e in secret["keyToEnv"]} == pipeline.S3_SECRET_ENV


def test_no_env_name_the_mlflow_plugin_injects_comes_from_our_config(docs):
    """The backend's MLflow plugin injects these into the driver's pod spec patch; a second
    entry of the same name (ours, from the ConfigMap, appended after it) would collide."""
    plugin = {"MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_WORKSPACE"}
    ours = set(pipeline.CONFIG_MAP_ENV.values()) | set(pipeline.S3_SECRET_ENV.values())
    assert not ours & plugin
    spec, _ = docs
    for executor in spec["deploymentSpec"]["executors"].values():
        env = {e["name"] for e in executor["container"].get("env", [])}
        assert not env & (plugin | ours)


def test_example_manifests_hold_the_keys_the_pipeline_reads():
    cm = yaml.safe_load((REPO / "manifests/kfp/cashier-integrity-config.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == pipeline.CONFIG_MAP
    assert set(cm["data"]) == set(pipeline.CONFIG_MAP_ENV)  # required keys: all present
    assert all(isinstance(v, str) for v in cm["data"].values())
    secret = yaml.safe_load((REPO / "manifests/kfp/cashier-integrity-s3.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == pipeline.S3_SECRET
    assert set(secret["stringData"]) == set(pipeline.S3_SECRET_ENV)
    assert all(v.startswith("<") for v in secret["stringData"].values())  # placeholders only


def test_the_readme_resource_table_is_the_pipelines_table():
    text = (REPO / "pipelines" / "README.md").read_text()
    rows = re.findall(r"^\| ([a-z-]+) \| [^|]+ \| (\S+) / (\S+) \| (\S+) / (\S+) \|$", text, re.M)
    documented = {name: tuple(values) for name, *values in rows}
    assert documented == {
        s.name: (r.cpu_request, r.cpu_limit, r.memory_request, r.memory_limit)
        for s in STAGES
        for r in [pipeline.RESOURCES[s.module]]
    }
