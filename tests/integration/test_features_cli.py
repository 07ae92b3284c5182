"""The features stage CLI as a subprocess: outputs, point-in-time profiles, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from components.contracts import features as F
from components.contracts import storage
from components.contracts.layout import SUBSET_COLUMN
from components.contracts.schemas import COHORT_LABELS
from components.features.logic import FEATURE_TABLE_SCHEMA
from tests.unit.test_features import batch_features, make_tx

pytestmark = pytest.mark.integration


def write_lake(uri: str, n: int = 3000, drop: str | None = None, hired: dict | None = None) -> None:
    df = make_tx(n, seed=11)
    if hired:  # cohort label column (``cashier_hired_on``) of some cashiers
        df["cashier_hired_on"] = df["cashier_id"].map(hired)
    df["is_fraud"] = df["void_count"] > 1
    df["fraud_type"] = np.where(df["is_fraud"], "void_abuse", "none")
    df["date"] = df["timestamp"].dt.strftime("%Y-%m-%d")
    if drop:
        df = df.drop(columns=[drop])
    storage.write_dataset(
        pa.Table.from_pandas(df, preserve_index=False), uri, partition_cols=["date"]
    )


def run_features(tmp_path, lake: str, splits: dict | None = None, s3_env: dict | None = None):
    splits_uri = str(tmp_path / "splits.json")
    storage.publish_json(
        splits
        or {
            "train_end": "2026-01-08T00:00:00",
            "valid_end": "2026-01-09T00:00:00",
            "historic_end": "2026-01-11T00:00:00",
        },
        splits_uri,
    )
    out_features, out_profiles = (
        str(tmp_path / "features.parquet"),
        str(tmp_path / "profiles.parquet"),
    )
    env = None
    if s3_env:
        import os

        env = {**os.environ, **s3_env}
        out_features = lake.replace("/lake", "/features.parquet")
        out_profiles = lake.replace("/lake", "/profiles.parquet")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.features",
            "--in-historic",
            lake,
            "--in-time-splits",
            splits_uri,
            "--out-features",
            out_features,
            "--out-profiles",
            out_profiles,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return proc, out_features, out_profiles


def test_features_cli_builds_point_in_time_table(tmp_path):
    lake = str(tmp_path / "lake")
    write_lake(lake)
    proc, out_features, out_profiles = run_features(tmp_path, lake)
    assert proc.returncode == 0, proc.stderr
    assert "3,000 rows" in proc.stdout
    table = storage.read_table(out_features, FEATURE_TABLE_SCHEMA)
    assert table.num_rows == 3000
    subsets = set(table.column(SUBSET_COLUMN).to_pylist())
    assert subsets == {"train", "valid", "test"}
    # Day-by-day streaming gives the same features as one pass over the whole history.
    expected = batch_features(make_tx(3000, seed=11))
    got = np.column_stack([table.column(n).to_numpy() for n in F.FEATURE_NAMES])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    profiles = storage.read_table(out_profiles, F.PROFILE_SCHEMA)
    assert profiles.filter(pa.compute.equal(profiles["level"], "global"))["n"][0].as_py() == 3000
    for name in COHORT_LABELS.names:  # older data without cohort labels: all null
        assert table.column(name).null_count == 3000


def test_features_cli_carries_the_cohort_labels(tmp_path):
    """Label-side cohort columns ride along, row by row, and are not model inputs."""
    lake = str(tmp_path / "lake")
    cashiers = sorted(set(make_tx(3000, seed=11)["cashier_id"]))
    hired = {cashiers[0]: date(2026, 1, 9), cashiers[1]: date(2026, 1, 6)}
    write_lake(lake, hired=hired)
    proc, out_features, _ = run_features(tmp_path, lake)
    assert proc.returncode == 0, proc.stderr
    table = storage.read_table(out_features, FEATURE_TABLE_SCHEMA)
    got = dict(
        zip(table["cashier_id"].to_pylist(), table["cashier_hired_on"].to_pylist(), strict=True)
    )
    assert got == {c: hired.get(c) for c in cashiers}
    assert not set(COHORT_LABELS.names) & set(F.FEATURE_NAMES)


def test_features_cli_missing_column_is_one_clear_line(tmp_path):
    lake = str(tmp_path / "lake")
    write_lake(lake, n=500, drop="no_sale_count")
    proc, _, _ = run_features(tmp_path, lake)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing column 'no_sale_count'" in lines[0]
    assert not (tmp_path / "features.parquet").exists()


def test_features_cli_empty_subset_publishes_nothing(tmp_path):
    lake = str(tmp_path / "lake")
    write_lake(lake, n=500)
    proc, *_ = run_features(
        tmp_path,
        lake,
        splits={
            "train_end": "2026-01-20T00:00:00",
            "valid_end": "2026-01-20T00:00:00",
            "historic_end": "2026-01-20T00:00:00",
        },
    )
    assert proc.returncode == 2 and "subset has no rows" in proc.stderr
    assert not (tmp_path / "features.parquet").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_features_cli_on_s3(tmp_path, s3_bucket, moto_s3):
    lake = f"s3://{s3_bucket}/lake"
    write_lake(lake, n=1000)
    proc, out_features, out_profiles = run_features(tmp_path, lake, s3_env=moto_s3)
    assert proc.returncode == 0, proc.stderr
    assert storage.read_table(out_features).num_rows == 1000
    assert storage.exists(out_profiles)
    assert json.loads(storage.read_bytes(f"{lake}/_SUCCESS"))["meta"]["rows"] == 1000
