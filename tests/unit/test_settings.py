"""Settings: read from the environment on demand, embedded defaults under VAR_DIR."""

from __future__ import annotations

import pytest

from components.contracts.settings import Settings


def test_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    for key in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_ARTIFACT_LOCATION",
        "PIPELINE_ROOT",
        "S3_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(key, raising=False)
    s = Settings.from_env()
    assert s.mlflow.tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert s.mlflow.artifact_location == (tmp_path / "mlflow" / "artifacts").as_uri()
    assert s.pipeline_root == str(tmp_path / "pipeline-root")
    assert s.s3.endpoint_url is None
    assert s.mlflow.champion_alias == "champion"


def test_env_overrides_and_secrets_not_in_repr(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    monkeypatch.setenv("PIPELINE_ROOT", "s3://bucket/root")
    s = Settings.from_env()
    assert s.mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert s.s3.endpoint_url == "http://127.0.0.1:9000"
    assert s.pipeline_root == "s3://bucket/root"
    assert "very-secret" not in repr(s)


def test_with_overrides_rejects_unknown_fields(monkeypatch):
    s = Settings.from_env()
    assert s.with_overrides(image_tag="abc").image_tag == "abc"
    with pytest.raises(TypeError, match="unknown settings: nope"):
        s.with_overrides(nope=1)


def test_the_configmap_tracking_uri_is_a_fallback_behind_mlflow_tracking_uri(monkeypatch):
    """On Kubeflow the pipeline's ConfigMap sets FALLBACK_MLFLOW_TRACKING_URI; the MLflow
    plugin's injected MLFLOW_TRACKING_URI (its MLFLOW_RUN_ID lives there) wins."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FALLBACK_MLFLOW_TRACKING_URI", "http://mlflow.team:5000")
    assert Settings.from_env().mlflow.tracking_uri == "http://mlflow.team:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://kubeflow-mlflow.example")
    assert Settings.from_env().mlflow.tracking_uri == "https://kubeflow-mlflow.example"


def test_result_settings_read_a_given_environment_not_the_process_one(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://process:5000")
    env = {
        "VAR_DIR": "/v",
        "MLFLOW_TRACKING_URI": "http://task:5000",
        "AWS_ENDPOINT_URL_S3": "http://s3:9000",
    }
    got = Settings.from_env(env).result_settings()
    assert got["mlflow.tracking_uri"] == "http://task:5000"
    assert got["s3.endpoint_url"] == "http://s3:9000"
    assert got["mlflow.champion_alias"] == "champion" and got["mlflow.model_name"]
    # every MLflow field counts; credentials never do
    assert {k.removeprefix("mlflow.") for k in got if k.startswith("mlflow.")} == set(
        vars(Settings.from_env(env).mlflow)
    ) - {"service_timeout_s"}
    secret = Settings.from_env({**env, "AWS_SECRET_ACCESS_KEY": "s3cret"}).result_settings()
    assert secret == got


def test_service_timeout_knob(monkeypatch):
    from components.contracts.schemas import InputError
    from components.contracts.settings import DEFAULT_SERVICE_TIMEOUT_S, mlflow_retry_env

    monkeypatch.delenv("SERVICE_TIMEOUT_S", raising=False)
    s = Settings.from_env()
    assert s.service_timeout_s == s.mlflow.service_timeout_s == DEFAULT_SERVICE_TIMEOUT_S == 30
    monkeypatch.setenv("SERVICE_TIMEOUT_S", "7.5")
    assert Settings.from_env().mlflow.service_timeout_s == 7.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv("SERVICE_TIMEOUT_S", bad)
        with pytest.raises(InputError, match="SERVICE_TIMEOUT_S"):
            Settings.from_env()
    # 30 s: 4 retries sleeping at most 0.5 + 2.5 + 4.5 + 8.5 = 16 s (MLflow's default: 7
    # retries, factor 2, ~250 s), each request timing out after 30 s.
    assert mlflow_retry_env(30) == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }


def test_configure_bounds_mlflow_retries_unless_set(monkeypatch, tmp_path):
    from components.contracts import tracking

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"):  # fmt: skip
        monkeypatch.setenv(key, "placeholder")  # so that monkeypatch restores the original
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")  # an operator's explicit choice
    monkeypatch.setenv("SERVICE_TIMEOUT_S", "10")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    tracking.bound_retries(Settings.from_env().mlflow.service_timeout_s)
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"  # 0.5 + 2.5 + 4.5 <= 10
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
