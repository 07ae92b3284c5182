"""Shared inputs of the fault-injection suite: real stage outputs on small synthetic data.

``trained`` runs the real train-xgb, train-iforest and evaluate CLIs (subprocesses) once per
session on a small features table, and builds a profile table with the feature module's
own ``ProfileState``: a good model pair and the evaluation that measured it. Each test then
damages a copy of what it needs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from faultlib import clean_env, profiles_table, run_stage
from published import publish_in_place
from train_synthetic import features_table


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """features.parquet, profiles.parquet (published by hand), xgb/ and iforest/ model
    outputs, evaluation/ and a 1-tree xgb model (``weak_xgb``), all published by the real
    stage CLIs."""
    root = tmp_path_factory.mktemp("faults-trained")
    env = clean_env(root / "var")
    features = root / "features.parquet"
    pq.write_table(features_table(4000, seed=3, fraud_rate=0.08), features)
    pq.write_table(profiles_table(), root / "profiles.parquet")
    publish_in_place(features)  # stages read published outputs only
    publish_in_place(root / "profiles.parquet")
    steps = [
        ("train_xgb", "--in-features", str(features), "--out-model", str(root / "xgb"),
         "--n-estimators", "40", "--max-depth", "3", "--nthread", "1"),
        ("train_xgb", "--in-features", str(features), "--out-model", str(root / "weak_xgb"),
         "--n-estimators", "1", "--max-depth", "1", "--nthread", "1",
         "--early-stopping-rounds", "0"),
        ("train_iforest", "--in-features", str(features), "--out-model", str(root / "iforest"),
         "--n-estimators", "30"),
        ("evaluate", "--in-features", str(features), "--in-xgb-model", str(root / "xgb"),
         "--in-iforest-model", str(root / "iforest"), "--out-evaluation",
         str(root / "evaluation")),
    ]  # fmt: skip
    for stage, *args in steps:
        proc = run_stage(stage, *args, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        "root": root,
        "features": features,
        "profiles": root / "profiles.parquet",
        "xgb": root / "xgb",
        "weak_xgb": root / "weak_xgb",
        "iforest": root / "iforest",
        "evaluation": root / "evaluation",
    }
