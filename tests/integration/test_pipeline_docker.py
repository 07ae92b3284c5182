"""``python -m pipelines run --docker``: the DSL through ``kfp.local.DockerRunner``.

This machine has no Docker engine: the end-to-end Docker run is skipped when the Docker
SDK's ping fails, and the no-engine path (a clear error, exit 1) is tested instead.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.docker_run import docker_available

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HAVE_DOCKER = docker_available()


@pytest.mark.skipif(
    HAVE_DOCKER, reason="a Docker engine answers; the no-engine path cannot be tested"
)
def test_docker_without_engine_is_a_clear_error(local_env):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--docker", "--param", "rows=1000"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no Docker engine answers" in proc.stderr


@pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine answers (docker SDK ping failed)")
def test_docker_runner_runs_the_pipeline_in_the_stage_images(local_env):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--docker", "--param", "rows=5000",
         "--param", "xgb_n_estimators=30", "--param", "iforest_n_estimators=20",
         "--pipeline-root", str(local_env / "docker-root")],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
