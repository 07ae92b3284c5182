"""Two stages configuring MLflow at once on a fresh SQLite store (train-xgb || train-iforest)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
import sys
from components.contracts.settings import MlflowSettings
from components.contracts import tracking
cfg = MlflowSettings(tracking_uri=sys.argv[1], artifact_location=sys.argv[2])
print(tracking.configure(cfg))
"""


def test_parallel_first_use_of_a_fresh_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    artifacts = (tmp_path / "artifacts").as_uri()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, uri, artifacts],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, same id for all
