"""The stage chain with every data and model location on ``s3://`` (moto's S3 server on
loopback, tests/conftest.py ``s3_bucket``) and MLflow artifacts in the same bucket
(``MLFLOW_ARTIFACT_LOCATION=s3://<bucket>/mlflow``, ``MLFLOW_S3_ENDPOINT_URL`` from the
fixture); the tracking/registry store stays the embedded SQLite one."""

from __future__ import annotations

import boto3
import pytest
from test_stage_chain import check_registry_and_pyfunc, run_chain  # shared helpers


@pytest.mark.integration
def test_stage_chain_on_s3(local_env, s3_bucket, monkeypatch, tmp_path):
    from components.contracts import storage
    from components.contracts.settings import Settings

    monkeypatch.setenv("MLFLOW_ARTIFACT_LOCATION", f"s3://{s3_bucket}/mlflow")
    chain = run_chain(f"s3://{s3_bucket}/run", rows=30_000, seed=11)
    settings = Settings.from_env()
    assert settings.mlflow.artifact_location == f"s3://{s3_bucket}/mlflow"

    for uri in (chain.xgb, chain.iforest, chain.evaluation, chain.bundle):
        assert uri.startswith("s3://") and storage.is_complete_dataset(uri), uri
    evaluation = storage.open_output(chain.evaluation)
    for name in ("blend.json", "metrics.json", "report.md", "plots/pr_curves.png"):
        assert evaluation.has(name) and storage.exists(evaluation.uri_of(name)), name
    # "Learnt something" on the hard generated world (chance: ROC-AUC 0.5, PR-AUC ~0.01).
    metrics = storage.read_json(chain.metrics)
    assert metrics["blend_roc_auc"] > 0.7 and metrics["blend_pr_auc"] > 0.05

    version = check_registry_and_pyfunc(chain, settings.mlflow.tracking_uri, tmp_path)
    assert version == "1"

    # The model's artifacts (bundle included) live in the bucket, not on local disk.
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="mlflow/")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("artifacts/bundle/manifest.json") for k in keys)
    assert any(k.endswith("pyfunc_model.py") for k in keys)
    assert not (local_env / "mlflow" / "artifacts").exists()
