"""Serving over real HTTP (uvicorn subprocess on loopback) with the pipeline's own model:
the registry champion (MODEL_URI, SQLite MLflow) and a baked bundle folder (MODEL_DIR)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.contracts import storage
from tests.conftest import BRIEF_REQUEST, REPO, free_port, get, post_json, running, uvicorn_cmd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(trained_pipeline):
    """The session pipeline run plus the registry URI of its model.

    On the tiny session data the quality gate may keep the champion alias where it was
    (nowhere, on a fresh registry); the registered version is served by number then.
    """
    decision = storage.read_json(trained_pipeline["decision"])
    registry = storage.open_output(trained_pipeline["bundle"]).read_json("registry.json")
    name, version = registry["model_name"], str(registry["model_version"])
    champion = decision.get("alias_moved") or decision.get("champion_after") == version
    uri = f"models:/{name}@champion" if champion else f"models:/{name}/{version}"
    return {
        **trained_pipeline,
        "model_uri": uri,
        "model_version": version,
        "champion": bool(champion),
    }


def test_registry_champion_over_http(pipeline, tmp_path):
    port = free_port()
    env = {
        **pipeline["env"],
        "MODEL_URI": pipeline["model_uri"],
        "MODEL_DOWNLOAD_DIR": str(tmp_path / "download"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("MODEL_DIR", None)
    base = f"http://127.0.0.1:{port}"
    with running(
        uvicorn_cmd(port), f"{base}/healthz", env=env, log=tmp_path / "uvicorn.log", timeout=180
    ):
        status, body = post_json(f"{base}/v1/predict", BRIEF_REQUEST)
        assert status == 200, body
        assert set(body) >= {
            "transaction_id",
            "risk_score",
            "risk_level",
            "action",
            "latency_ms",
            "model_version",
            "reasons",
        }
        assert body["model_version"] == pipeline["model_version"]
        info = json.loads(get(f"{base}/v1/model")[1])
        assert info["alias"] == ("champion" if pipeline["champion"] else None)
        assert info["run_id"] and info["source"] == pipeline["model_uri"]
        status, bad = post_json(f"{base}/v1/predict", {**BRIEF_REQUEST, "no_sale_count": -1})
        assert status == 400 and "no_sale_count" in json.dumps(bad)
        assert get(f"{base}/readyz")[0] == 200
        metrics = get(f"{base}/metrics")[1].decode()
        assert (
            'pos_risk_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in metrics
        )


def test_bake_then_serve_with_two_workers(pipeline, tmp_path):
    out = tmp_path / "model"
    env = {**pipeline["env"], "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bake_bundle.py"),
            "--out",
            str(out),
            "--model-uri",
            pipeline["model_uri"],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert {"manifest.json", "registry.json"} <= set(storage.open_output(str(out)).files)

    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    port = free_port()
    serve_env = {
        **env,
        "MODEL_DIR": str(out),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "API_KEY": "k",
    }
    base = f"http://127.0.0.1:{port}"
    with running(
        uvicorn_cmd(port, workers=2),
        f"{base}/healthz",
        env=serve_env,
        log=tmp_path / "uvicorn.log",
        timeout=180,
    ):
        assert post_json(f"{base}/v1/predict", BRIEF_REQUEST)[0] == 401
        for i in range(20):
            status, body = post_json(
                f"{base}/v1/predict",
                {**BRIEF_REQUEST, "transaction_id": f"T{i}"},
                {"X-API-Key": "k"},
            )
            assert status == 200 and body["transaction_id"] == f"T{i}"
        batch = {"transactions": [BRIEF_REQUEST] * 50}
        status, body = post_json(f"{base}/v1/predict/batch", batch, {"X-API-Key": "k"})
        assert status == 200 and body["count"] == 50
        metrics = get(f"{base}/metrics")[1].decode()
        # Aggregated across both workers by the multiprocess collector.
        total = sum(
            float(m.rsplit(" ", 1)[1])
            for m in metrics.splitlines()
            if m.startswith("pos_risk_predictions_total{")
        )
        assert total == 70.0
        assert get(f"{base}/readyz")[0] == 200


def test_bake_refuses_a_tampered_registry_artifact(pipeline, tmp_path):
    var = Path(pipeline["var"])
    blends = [p for p in var.rglob("blend.json") if (p.parent / "manifest.json").exists()]
    assert blends, "no registered bundle found in the artifact store"
    target = blends[0]
    original = target.read_bytes()
    try:
        data = json.loads(original)
        data["intercept"] = data["intercept"] + 5.0
        target.write_text(json.dumps(data))
        env = {**pipeline["env"], "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "bake_bundle.py"),
                "--out",
                str(tmp_path / "model"),
                "--model-uri",
                pipeline["model_uri"],
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1
        assert "sha256" in proc.stderr and "blend.json" in proc.stderr
        assert not (tmp_path / "model").exists()
    finally:
        target.write_bytes(original)
    shutil.rmtree(tmp_path / "model", ignore_errors=True)
    assert os.path.exists(target)
