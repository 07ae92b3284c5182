"""``python -m pipelines run --docker``: the compiled pipeline, every task in its image.

The checked-in YAML runs end to end on small data with the locally built images (never
pulled) and ends with a registered ``champion``. Tracking is a real ``mlflow server``
process on loopback; the containers use the host network and log to it over HTTP
(artifacts proxied by the server, ``mlflow-artifacts:/``), so nothing of MLflow is mounted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# 5,000 rows of the hard world hold ~40 test frauds: this test checks the mechanics (images,
# artifacts, registry, alias), so the gate's quality floors are off; the regression check stays.
SMALL = ["--param", "rows=5000", "--param", "xgb_n_estimators=30",
         "--param", "iforest_n_estimators=20",
         "--param", "min_pr_auc=0", "--param", "min_recall_at_1pct_fpr=0"]  # fmt: skip


def _run(args, env, timeout=1800):
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def run_env(local_env, mlflow_server) -> dict[str, str]:
    name = f"docker-e2e-{uuid.uuid4().hex[:8]}"
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_ARTIFACT_LOCATION": f"mlflow-artifacts:/{name}",
        "MLFLOW_EXPERIMENT_NAME": name,
        "MODEL_NAME": f"{name}-model",
    }


def test_whole_pipeline_runs_in_the_stage_images_and_registers_a_champion(
    stage_images, run_env, local_env
):
    from mlflow import MlflowClient

    proc = _run(["run", "--docker", *SMALL], run_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "alias champion moved" in proc.stdout

    (record_file,) = (local_env / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "succeeded"
    for name, task in record["tasks"].items():
        assert task["status"] == "succeeded", name
        log = Path(task["log"]).read_text()
        # each task ran in the image the YAML names (stage_images: what make images builds)
        assert f" in {stage_images[name]}: python -m components." in log, name
        assert "unrecognized arguments" not in log, name

    client = MlflowClient(tracking_uri=run_env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(run_env["MODEL_NAME"], "champion")
    assert champion.version == "1"


def test_a_missing_image_is_one_line_naming_make_images(stage_images, local_env, tmp_path):
    """No pull: an image the engine does not have fails before any task runs."""
    text = (REPO / "pipelines/cashier_integrity.yaml").read_text()
    ref = stage_images["split"]
    missing = ref.rpartition(":")[0] + ":0000000000000000"
    (tmp_path / "p.yaml").write_text(text.replace(ref, missing))
    proc = _run(["run", str(tmp_path / "p.yaml"), "--docker", *SMALL], os.environ, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert missing in lines[0] and "`make images`" in lines[0]
    assert not (local_env / "runs").exists() or not list((local_env / "runs").glob("*.json"))
