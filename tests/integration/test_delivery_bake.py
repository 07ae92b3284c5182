"""Model baking against a real local MLflow registry (SQLite store in a temp folder).

* ``tools.delivery.record`` (``scripts/record_deployment.py``) tags the deployed model version with the image digest.
* ``tools.delivery.bake`` (``scripts/bake_bundle.py``) resolves ``models:/<name>@champion``,
  downloads the bundle and verifies it; a tampered file is rejected.
AWS itself is not involved; the registry is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.contracts import storage
from tools.delivery import record as rd

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "b" * 64
IMAGE = f"registry.example/ci/serving-lambda@{DIGEST}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A SQLite MLflow registry with model ``risk-test`` versions 1-3, champion -> 2."""
    import mlflow

    tmp_path = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("risk-test")
    source = tmp_path / "artifacts"
    source.mkdir()
    for _ in range(3):
        client.create_model_version("risk-test", source.as_uri())
    client.set_registered_model_alias("risk-test", "champion", "2")
    return uri, client


def record_cli(uri: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MODEL_NAME": "risk-test"}
    return subprocess.run([sys.executable, "-m", "tools.delivery.record", *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


def test_record_tags_the_bundle_model_version(registry, tmp_path):
    uri, client = registry
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"model_name": "risk-test",
                                                      "model_version": "1"}))  # fmt: skip
    out = record_cli(uri, "--bundle-dir", str(bundle), "--image-uri", IMAGE, "--target",
                 "lambda:stack", "--git-sha", "abc1234", "--endpoint", "https://api.example/")  # fmt: skip
    assert out.returncode == 0, out.stderr
    tags = client.get_model_version("risk-test", "1").tags
    assert tags["deploy.image_digest"] == DIGEST and tags["deploy.image_uri"] == IMAGE
    assert tags["deploy.target"] == "lambda:stack" and tags["deploy.git_sha"] == "abc1234"
    assert "deploy.image_digest" not in client.get_model_version("risk-test", "3").tags


def test_record_resolves_the_alias_without_a_version(registry, monkeypatch):
    uri, client = registry
    monkeypatch.setenv("MODEL_NAME", "risk-test")
    code = rd.main(["--tracking-uri", uri, "--image-uri", IMAGE, "--target", "lambda:stack"])
    assert code == 0
    assert client.get_model_version("risk-test", "2").tags["deploy.image_digest"] == DIGEST


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--model-version", "9"), "model risk-test version 9 not in the registry"),
     (("--alias", "nobody"), "models:/risk-test@nobody: cannot resolve"),
     (("--image-uri", "r.example/x@sha256:short"), "digest must be sha256:<64 hex>")],
)  # fmt: skip
def test_record_bad_input_is_one_line(registry, args, message, monkeypatch, capsys):
    uri, _ = registry
    monkeypatch.setenv("MODEL_NAME", "risk-test")
    base = ["--tracking-uri", uri, "--image-uri", IMAGE, "--target", "lambda:stack"]
    assert rd.main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def registered_bundle(tmp_path_factory):
    """A real bundle (tools.demo.build_demo_bundle) logged to a run and registered as
    ``bake-test`` version 1 with alias ``champion``, in a SQLite registry."""
    import mlflow

    from tools.demo import build_demo_bundle

    tmp = tmp_path_factory.mktemp("bake")
    build_demo_bundle(tmp / "bundle", rows=2000, n_estimators=15, iforest_trees=20)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("bake", artifact_location=(tmp / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(tmp / "bundle"), "bundle")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("bake-test")
    client.create_model_version("bake-test", f"runs:/{run.info.run_id}/bundle",
                                run_id=run.info.run_id)  # fmt: skip
    client.set_registered_model_alias("bake-test", "champion", "1")
    stored = Path(client.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    return uri, client, tmp, stored / "bundle"


def bake(uri: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MODEL_NAME": "bake-test"}
    return subprocess.run([sys.executable, "-m", "tools.delivery.bake", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def test_bake_downloads_verifies_and_records(registered_bundle, monkeypatch):
    import hashlib

    uri, client, tmp, _ = registered_bundle
    out = tmp / "serving-model"
    result = bake(uri, out)
    assert result.returncode == 0, result.stderr
    version = Path(storage.open_output(str(out)).path())  # bake publishes like a stage
    manifest = json.loads((version / "manifest.json").read_text())
    for rel, sha in manifest["files"].items():
        assert hashlib.sha256((version / rel).read_bytes()).hexdigest() == sha, rel
    assert "registry.json" in manifest["files"]  # the version it claims is verified too
    # the baked folder is what the serving image copies in, and it names its registry version
    assert rd.bundle_model(out) == ("bake-test", "1")
    monkeypatch.delenv("MODEL_NAME", raising=False)
    code = rd.main(["--tracking-uri", uri, "--bundle-dir", str(out), "--image-uri", IMAGE,
                    "--target", "lambda:stack"])  # fmt: skip
    assert code == 0
    assert client.get_model_version("bake-test", "1").tags["deploy.image_digest"] == DIGEST


def test_bake_rejects_a_tampered_artifact(registered_bundle):
    uri, _, tmp, stored = registered_bundle
    target = stored / "blend.json"
    original = target.read_bytes()
    try:
        target.write_bytes(original.replace(b"{", b"{ ", 1))
        out = tmp / "tampered-out"
        result = bake(uri, out)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert "blend.json" in lines[-1], result.stderr
        assert not out.exists(), "nothing is written when verification fails"
    finally:
        target.write_bytes(original)
