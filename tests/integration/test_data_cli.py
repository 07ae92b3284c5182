"""The datagen and split CLIs as real subprocesses, on local folders and on S3 (moto server)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from components.contracts import storage
from components.contracts.schemas import (
    COHORT_LABELS,
    GENERATED_TRANSACTION,
    LABELLED_TRANSACTION,
    LIVE_LABELS,
    RAW_TRANSACTION,
)
from tests.conftest import run_stage

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROWS = 20_000
GEN_ARGS = ["--rows", str(ROWS), "--days", "16", "--stores", "3", "--cashiers-per-store", "8",
            "--fraud-rate", "0.03", "--seed", "11", "--chunk-rows", "6000"]  # fmt: skip


def split_args(src: str, out: str) -> list[str]:
    return [
        "--in-transactions", src,
        "--out-historic", f"{out}/historic",
        "--out-live-stream", f"{out}/live.jsonl",
        "--out-live-labels", f"{out}/live_labels.parquet",
        "--out-time-splits", f"{out}/time_splits.json",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "transactions"
    proc = run_stage("datagen", "--out-transactions", str(out), *GEN_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert "scan_avoidance" in proc.stdout and f"rows {ROWS:,}" in proc.stdout
    return out


def test_datagen_writes_a_complete_valid_dataset(generated):
    assert storage.is_complete_dataset(str(generated))
    files = storage.open_output(str(generated)).files
    assert len([f for f in files if f.endswith(".parquet")]) == -(-ROWS // 6000)  # chunked
    table = storage.read_table(str(generated), LABELLED_TRANSACTION)
    assert table.num_rows == ROWS
    assert pc.count_distinct(table.column("transaction_id")).as_py() == ROWS
    assert 0.02 < pc.mean(table.column("is_fraud").cast(pa.float64())).as_py() < 0.04


def test_datagen_chunk_size_does_not_change_data(generated, tmp_path):
    other = tmp_path / "tx"
    args = [*GEN_ARGS[:-1], "1000000"]
    assert run_stage("datagen", "--out-transactions", str(other), *args).returncode == 0
    a = storage.read_table(str(generated), LABELLED_TRANSACTION)
    b = storage.read_table(str(other), LABELLED_TRANSACTION)
    assert a.equals(b)


def test_split_outputs(generated, tmp_path):
    proc = run_stage("split", *split_args(str(generated), str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    splits = storage.read_json(str(tmp_path / "time_splits.json"))
    held = splits.pop("holdout_cashiers")
    assert splits == {
        "train_end": "2026-01-09T00:00:00",
        "valid_end": "2026-01-13T00:00:00",
        "historic_end": "2026-01-18T00:00:00",
        "live_end": "2026-01-21T00:00:00",
    }
    # cashier-disjoint: the default share of cashiers, dishonest ones among them
    table = storage.read_table(str(generated), LABELLED_TRANSACTION)
    cashiers = set(table.column("cashier_id").to_pylist())
    thieves = set(table.filter(table.column("is_fraud")).column("cashier_id").to_pylist())
    assert held == sorted(held) and set(held) <= cashiers
    assert len(held) == pytest.approx(0.3 * len(cashiers), abs=2)
    assert set(held) & thieves
    dates = storage.list_partitions(str(tmp_path / "historic"), "date")
    assert dates == [f"2026-01-{d:02d}" for d in range(5, 18)]  # 16 days minus 3 live days
    historic = storage.read_table(str(tmp_path / "historic"), LABELLED_TRANSACTION)
    stream = storage.read_jsonl(str(tmp_path / "live.jsonl"), RAW_TRANSACTION)
    labels = storage.read_table(str(tmp_path / "live_labels.parquet"), LIVE_LABELS)
    assert historic.num_rows + stream.num_rows == ROWS
    assert pc.max(historic.column("timestamp")).as_py().isoformat() < splits["historic_end"]
    assert pc.min(stream.column("timestamp")).as_py().isoformat() >= splits["historic_end"]
    first_line = json.loads(storage.read_bytes(str(tmp_path / "live.jsonl")).splitlines()[0])
    assert set(first_line) == set(RAW_TRANSACTION.names)  # no labels on the wire
    ts = stream.column("timestamp").to_pylist()
    assert ts == sorted(ts)
    assert labels.column("transaction_id").equals(stream.column("transaction_id"))
    source = storage.read_table(str(generated), LABELLED_TRANSACTION)
    src_live = source.filter(
        pc.is_in(source.column("transaction_id"), labels.column("transaction_id"))
    )
    assert src_live.num_rows == labels.num_rows
    assert pc.sum(src_live.column("is_fraud")).as_py() == pc.sum(labels.column("is_fraud")).as_py()
    # The cohort labels flow through: into the lake and next to the live labels.
    cohort = storage.read_table(str(generated), GENERATED_TRANSACTION).select(
        ["transaction_id", *COHORT_LABELS.names]
    )
    lake = storage.read_table(str(tmp_path / "historic"), GENERATED_TRANSACTION)
    for out in (lake, labels):
        got = out.select(["transaction_id", *COHORT_LABELS.names]).sort_by("transaction_id")
        want = cohort.filter(pc.is_in(cohort["transaction_id"], got["transaction_id"]))
        assert got.equals(want.sort_by("transaction_id"))
    assert lake.column("cashier_hired_on").null_count < lake.num_rows  # some new hires
    # A partition holds exactly its own day.
    day = storage.read_table(
        str(tmp_path / "historic"), LABELLED_TRANSACTION, filter=ds.field("date") == "2026-01-07"
    )
    assert {t.date().isoformat() for t in day.column("timestamp").to_pylist()} == {"2026-01-07"}


def test_datagen_bad_parameters_write_nothing(tmp_path):
    out = tmp_path / "tx"
    for bad in (["--rows", "0"], ["--fraud-rate", "0.9"], ["--start-date", "2026-02-30"],
                ["--rows", "ten"]):  # fmt: skip
        proc = run_stage("datagen", "--out-transactions", str(out), *bad)
        assert proc.returncode == 2, bad
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("datagen: error:")
        assert list(tmp_path.iterdir()) == []


def test_split_renamed_column_fails_naming_file_and_column(generated, tmp_path):
    table = storage.read_table(str(generated), LABELLED_TRANSACTION)
    bad = tmp_path / "bad.parquet"
    storage.publish_table(
        table.rename_columns(
            [("void_cnt" if c == "void_count" else c) for c in table.column_names]
        ),
        str(bad),
    )
    out = tmp_path / "out"
    proc = run_stage("split", *split_args(str(bad), str(out)))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "'void_count'" in proc.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_split_wrong_type_fails(generated, tmp_path):
    table = storage.read_table(str(generated), LABELLED_TRANSACTION)
    i = table.schema.get_field_index("payment_type")
    bad = tmp_path / "bad.parquet"
    storage.publish_table(
        table.set_column(i, "payment_type", pa.array([1.5] * table.num_rows)), str(bad)
    )
    out = tmp_path / "out"
    proc = run_stage("split", *split_args(str(bad), str(out)))
    assert proc.returncode == 2 and "payment_type" in proc.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_split_period_too_short_writes_nothing(generated, tmp_path):
    out = tmp_path / "out"
    proc = run_stage("split", *split_args(str(generated), str(out)), "--valid-days", "10")
    assert proc.returncode == 2 and "too short" in proc.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_split_missing_input(tmp_path):
    proc = run_stage("split", *split_args(str(tmp_path / "nope"), str(tmp_path / "out")))
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_datagen_and_split_on_s3(s3_bucket, tmp_path):
    env = {k: os.environ[k] for k in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}  # fmt: skip
    tx = f"s3://{s3_bucket}/data/transactions"
    args = ["--rows", "6000", "--days", "14", "--stores", "2", "--cashiers-per-store", "6"]
    proc = run_stage("datagen", "--out-transactions", tx, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert storage.is_complete_dataset(tx)
    out = f"s3://{s3_bucket}/split"
    proc = run_stage("split", *split_args(tx, out), env=env)
    assert proc.returncode == 0, proc.stderr
    historic = storage.read_table(f"{out}/historic", LABELLED_TRANSACTION)
    stream = storage.read_jsonl(f"{out}/live.jsonl", RAW_TRANSACTION)
    labels = storage.read_table(f"{out}/live_labels.parquet", LIVE_LABELS)
    assert historic.num_rows + stream.num_rows == 6000
    assert labels.num_rows == stream.num_rows
    assert storage.read_json(f"{out}/time_splits.json")["live_end"] == "2026-01-19T00:00:00"
    assert storage.list_partitions(f"{out}/historic", "date")[0] == "2026-01-05"
