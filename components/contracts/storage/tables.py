"""Tables: Parquet files and datasets, JSON Lines; reads validate against a declared schema."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from components.contracts.schemas import SchemaError, validate_table
from components.contracts.settings import S3Settings
from components.contracts.storage.fs import StorageError, atomic_file, filesystem, stat
from components.contracts.storage.objects import read_bytes
from components.contracts.storage.outputs import open_output, resolve_data


def write_table(table: pa.Table, uri: str, s3: S3Settings | None = None) -> None:
    """Write one Parquet file atomically (a single object; stages use ``publish``)."""
    with atomic_file(uri, s3) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_jsonl(table: pa.Table, uri: str, s3: S3Settings | None = None) -> None:
    """Write a table as JSON Lines (one object per row, timestamps ISO-8601), atomically.

    Floats are written with full precision, so a round trip through ``read_jsonl`` is exact.
    Rows are encoded in batches into a local temporary file, so memory stays bounded by a
    batch, then the file is renamed into place (local) or uploaded (S3).
    """
    import msgspec

    encoder = msgspec.json.Encoder()
    with atomic_file(uri, s3) as tmp, open(tmp, "wb") as f:
        for batch in table.to_batches(max_chunksize=65_536):
            f.write(b"".join(encoder.encode(row) + b"\n" for row in batch.to_pylist()))


class ParquetStreamWriter:
    """Write one Parquet file chunk by chunk; it appears at ``uri`` only on success.

    Chunks go to a local temporary file (``atomic_file``, a row group per ``write``), which
    is renamed into place (local) or uploaded in one go (S3) when the block ends without
    an exception::

        with ParquetStreamWriter(pub.file(out), schema) as w:
            for table in chunks:
                w.write(table)
    """

    def __init__(self, uri: str, schema: pa.Schema, s3: S3Settings | None = None):
        self.uri, self.schema = uri, schema
        self.rows = 0
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_file(uri, s3))
        self._writer = pq.ParquetWriter(tmp, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._writer.close()
        except BaseException as err:  # drop the temp file; the writer's error wins
            self._stack.__exit__(type(err), err, err.__traceback__)
            raise
        self._stack.__exit__(exc_type, exc, tb)


def read_table(
    uri: str,
    schema: pa.Schema | None = None,
    *,
    s3: S3Settings | None = None,
    columns: list[str] | None = None,
    filter: Any = None,
    check_values: bool = True,
    require_marker: bool = True,
) -> pa.Table:
    """Read a published Parquet output (a file, or a Hive-partitioned folder) and validate it.

    Args:
        uri: Local path or ``s3://`` URI of a published output.
        schema: Declared schema; the result is cast to it and checked (see
            ``schemas.validate_table``). None skips validation.
        s3: S3 settings; read from the environment when None.
        columns: Read only these columns (plus nothing else).
        filter: A ``pyarrow.dataset`` expression to push down (e.g. a date range).
        check_values: Check nulls, NaN, negatives and enum values too.
        require_marker: False accepts a plain Parquet file that is not a stage output
            (e.g. a verified bundle's own member).

    Raises:
        StorageError: The URI is missing, unreadable or not a complete published output.
        SchemaError: The content does not match ``schema``.
    """
    fs, path, is_file = resolve_data(uri, s3, require_marker)
    try:
        if is_file:
            dataset = ds.dataset(path, filesystem=fs, format="parquet")
        else:
            dataset = ds.dataset(
                path,
                filesystem=fs,
                format="parquet",
                partitioning="hive",
                exclude_invalid_files=False,
                ignore_prefixes=[".", "_"],
            )
        if columns is None and schema is not None:
            columns = [c for c in schema.names if c in dataset.schema.names]
        table = dataset.to_table(columns=columns, filter=filter)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StorageError(f"{uri}: not a readable Parquet file or dataset ({exc})") from exc
    if schema is None:
        return table
    return validate_table(table, schema, source=uri, check_values=check_values)


def iter_dataset_batches(
    uri: str, *, s3: S3Settings | None = None, batch_rows: int = 1_000_000
) -> Iterator[pa.RecordBatch]:
    """Stream record batches from a published Parquet output without loading it all."""
    fs, path, is_file = resolve_data(uri, s3, True)
    dataset = ds.dataset(
        path,
        filesystem=fs,
        format="parquet",
        partitioning=None if is_file else "hive",
        ignore_prefixes=[".", "_"],
    )
    yield from dataset.to_batches(batch_size=batch_rows)


def read_jsonl(
    uri: str,
    schema: pa.Schema | None = None,
    *,
    s3: S3Settings | None = None,
    require_marker: bool = True,
) -> pa.Table:
    """Read newline-delimited JSON; timestamps as ISO-8601 strings. Validates like Parquet."""
    import pyarrow.json as pajson

    fs, path = filesystem(uri, s3)
    if stat(uri, fs, path).type == pafs.FileType.Directory:
        raw = open_output(uri, s3).read_bytes()
    else:
        resolve_data(uri, s3, require_marker)
        raw = read_bytes(uri, s3)
    if not raw.strip():
        raise SchemaError(f"{uri}: file is empty")
    explicit = None
    if schema is not None:
        explicit = pa.schema([pa.field(f.name, f.type) for f in schema])
    try:
        table = pajson.read_json(
            io.BytesIO(raw),
            parse_options=pajson.ParseOptions(
                explicit_schema=explicit, unexpected_field_behavior="ignore"
            ),
        )
    except pa.ArrowInvalid as exc:
        raise SchemaError(f"{uri}: not valid JSON Lines for the schema ({exc})") from exc
    if schema is None:
        return table
    return validate_table(table, schema, source=uri)
