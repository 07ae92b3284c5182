"""Storage and schema contracts on local paths: atomic writes, validation errors name the column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.contracts import storage
from components.contracts.schemas import (
    LABELLED_TRANSACTION,
    RAW_TRANSACTION,
    SchemaError,
    validate_table,
)
from tests.unit.test_features import make_tx


def raw_table(n: int = 20) -> pa.Table:
    df = make_tx(n)
    df["is_fraud"] = False
    df["fraud_type"] = "none"
    return pa.Table.from_pandas(df, preserve_index=False)


def test_validate_casts_and_orders_columns():
    table = raw_table()
    shuffled = table.select(list(reversed(table.column_names)))
    out = validate_table(shuffled, LABELLED_TRANSACTION, source="mem")
    assert out.schema == LABELLED_TRANSACTION


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["void_count"]), "missing column 'void_count'"),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("item_count"), "item_count", pa.array(["x"] * t.num_rows)
            ),
            "column 'item_count' has type string",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("total_amount"),
                "total_amount",
                pa.array([np.nan] * t.num_rows),
            ),
            "'total_amount' has .* NaN",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("void_count"), "void_count", pa.array([-1] * t.num_rows)
            ),
            "'void_count' has .* negative",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("lane_type"),
                "lane_type",
                pa.array(["drive_thru"] * t.num_rows),
            ),
            "unknown value 'drive_thru'",
        ),
        (lambda t: t.slice(0, 0), "empty"),
    ],
)
def test_validation_errors_name_source_and_column(mutate, message):
    with pytest.raises(SchemaError, match=message) as info:
        validate_table(mutate(raw_table()), RAW_TRANSACTION, source="lake/part-0.parquet")
    assert str(info.value).startswith("lake/part-0.parquet:")


def test_write_table_is_atomic_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "t.parquet"
    storage.write_table(raw_table(), str(target))
    table = storage.read_table(str(target), LABELLED_TRANSACTION, require_marker=False)
    assert table.num_rows == 20
    assert [p.name for p in target.parent.iterdir()] == ["t.parquet"]
    with pytest.raises(storage.StorageError, match=r"t\.parquet: a plain file, not a published"):
        storage.read_table(str(target))  # a single object is not a stage output


def test_dataset_writer_publishes_only_on_success(tmp_path):
    uri = str(tmp_path / "lake")
    with pytest.raises(RuntimeError), storage.DatasetWriter(uri, partition_cols=["store_id"]) as w:
        w.write(raw_table())
        raise RuntimeError("killed mid-write")
    assert not (tmp_path / "lake").exists()
    assert list(tmp_path.iterdir()) == []
    storage.write_dataset([raw_table(), raw_table()], uri, partition_cols=["store_id"])
    assert storage.is_complete_dataset(uri)
    assert storage.list_partitions(uri, "store_id") == ["S01", "S02"]
    assert storage.read_table(uri, LABELLED_TRANSACTION).num_rows == 40


def test_folder_without_success_marker_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    storage.write_table(raw_table(), str(tmp_path / "half" / "part-0.parquet"))
    with pytest.raises(storage.StorageError, match="no _SUCCESS marker"):
        storage.read_table(str(tmp_path / "half"))


def test_stream_writer_discards_on_error(tmp_path):
    uri = str(tmp_path / "f.parquet")
    table = raw_table()
    with pytest.raises(ValueError), storage.ParquetStreamWriter(uri, table.schema) as w:
        w.write(table)
        raise ValueError("bad chunk")
    assert list(tmp_path.iterdir()) == []
    with storage.ParquetStreamWriter(uri, table.schema) as w:
        w.write(table)
        w.write(table)
    assert storage.read_table(uri, require_marker=False).num_rows == 40


def test_missing_and_unreadable_inputs_name_the_file(tmp_path):
    with pytest.raises(storage.StorageError, match="no such file"):
        storage.read_table(str(tmp_path / "nope.parquet"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(storage.StorageError, match=r"bad\.parquet"):
        storage.read_table(str(bad))


def test_jsonl_roundtrip_with_timestamps(tmp_path):
    table = validate_table(raw_table(), RAW_TRANSACTION, source="mem")
    uri = str(tmp_path / "live.jsonl")
    storage.write_jsonl(table, uri)
    first = (tmp_path / "live.jsonl").read_text().splitlines()[0]
    assert '"timestamp":"2026-01-05T' in first
    back = storage.read_jsonl(uri, RAW_TRANSACTION, require_marker=False)
    assert back.equals(table)


@pytest.mark.parametrize("knob", [1.0, 3.0, 6.0, 30.0, 600.0])
def test_s3_budget_fits_the_knob(knob):
    """Tries x per-try time + back-off stay within SERVICE_TIMEOUT_S (1 s per try at least)."""
    from components.contracts.storage.fs import S3_BACKOFF_S

    attempts, per_try = storage.s3_budget(knob)
    assert attempts >= 2 and per_try >= 1.0
    assert attempts * per_try + S3_BACKOFF_S <= max(knob, attempts * 1.0 + S3_BACKOFF_S)


def test_s3_filesystem_takes_its_timeouts_from_service_timeout_s():
    from components.contracts.settings import S3Settings

    s3 = S3Settings.from_env({"S3_ENDPOINT_URL": "http://127.0.0.1:9", "SERVICE_TIMEOUT_S": "33"})
    assert s3.service_timeout_s == 33.0
    fs, _ = storage.filesystem("s3://bucket/key", s3)
    options = fs.__reduce__()[1][0]  # the S3FileSystem's constructor arguments
    assert options["connect_timeout"] == options["request_timeout"] == storage.s3_budget(33)[1]
