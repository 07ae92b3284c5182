"""The one storage module: Parquet, JSON Lines and JSON on local paths and ``s3://`` URIs.

Every write is atomic from a reader's point of view:

* a single file is written to a temporary name and renamed (local), or uploaded in one
  request / one completed multipart upload (S3), so it either exists whole or not at all;
* a dataset folder (several Parquet files, e.g. Hive-partitioned) is built in a temporary
  folder and renamed (local), or uploaded file by file with a ``_SUCCESS`` marker written
  last (S3). Readers refuse a dataset folder without the marker, so a stage killed
  mid-write never leaves an output that a later stage or the runner's cache would trust.

Reads validate against a declared schema (``schemas.validate_table``) and name the file and
column on error. S3 endpoint, region and credentials come from ``settings.S3Settings``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from components.contracts.schemas import SchemaError, validate_table
from components.contracts.settings import S3Settings

SUCCESS_MARKER = "_SUCCESS"


class StorageError(OSError):
    """A file or URI could not be read or written; the message names it."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def filesystem(uri: str, s3: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem and the path within it for a local path or ``s3://`` URI."""
    uri = str(uri)
    if is_s3(uri):
        s3 = s3 or S3Settings.from_env()
        kwargs: dict[str, Any] = {"region": s3.region}
        if s3.endpoint_url:
            scheme, _, host = s3.endpoint_url.partition("://")
            kwargs["endpoint_override"] = host or scheme
            kwargs["scheme"] = scheme if host else "https"
        if s3.access_key_id and s3.secret_access_key:
            kwargs["access_key"] = s3.access_key_id
            kwargs["secret_key"] = s3.secret_access_key
            if s3.session_token:
                kwargs["session_token"] = s3.session_token
        return pafs.S3FileSystem(**kwargs), uri.removeprefix("s3://").rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI."""
    base = str(uri).rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def exists(uri: str, s3: S3Settings | None = None) -> bool:
    fs, path = filesystem(uri, s3)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_complete_dataset(uri: str, s3: S3Settings | None = None) -> bool:
    """True when ``uri`` is a single file, or a dataset folder with its ``_SUCCESS`` marker."""
    fs, path = filesystem(uri, s3)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return True
    if info.type == pafs.FileType.Directory:
        return fs.get_file_info(f"{path}/{SUCCESS_MARKER}").type == pafs.FileType.File
    return False


def _check_readable(uri: str, fs: pafs.FileSystem, path: str) -> pafs.FileInfo:
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: no such file or folder")
    if info.type == pafs.FileType.Directory and (
        fs.get_file_info(f"{path}/{SUCCESS_MARKER}").type != pafs.FileType.File
    ):
        raise StorageError(
            f"{uri}: dataset folder has no {SUCCESS_MARKER} marker (incomplete or not ours)"
        )
    return info


# ---------------------------------------------------------------- bytes and small files


def _publish(tmp: str, fs: pafs.FileSystem, path: str) -> None:
    """Move a finished local temp file to its target: rename locally, one upload on S3."""
    if isinstance(fs, pafs.LocalFileSystem):
        os.replace(tmp, path)
        return
    with open(tmp, "rb") as src, fs.open_output_stream(path) as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)


def read_bytes(uri: str, s3: S3Settings | None = None) -> bytes:
    fs, path = filesystem(uri, s3)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise StorageError(f"{uri}: no such file") from exc
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc


def write_bytes(data: bytes, uri: str, s3: S3Settings | None = None) -> None:
    """Write ``data`` to ``uri`` atomically (temp + rename locally, one upload on S3)."""
    fs, path = filesystem(uri, s3)
    if isinstance(fs, pafs.LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_json(uri: str, s3: S3Settings | None = None) -> Any:
    raw = read_bytes(uri, s3)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc})") from exc


def write_json(obj: Any, uri: str, s3: S3Settings | None = None) -> None:
    write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), uri, s3)


# ---------------------------------------------------------------- Parquet


def read_table(
    uri: str,
    schema: pa.Schema | None = None,
    *,
    s3: S3Settings | None = None,
    columns: list[str] | None = None,
    filter: Any = None,
    check_values: bool = True,
) -> pa.Table:
    """Read a Parquet file or dataset folder (Hive partitions allowed) and validate it.

    Args:
        uri: Local path or ``s3://`` URI of a ``.parquet`` file or a dataset folder.
        schema: Declared schema; the result is cast to it and checked (see
            ``schemas.validate_table``). None skips validation.
        s3: S3 settings; read from the environment when None.
        columns: Read only these columns (plus nothing else).
        filter: A ``pyarrow.dataset`` expression to push down (e.g. a date range).
        check_values: Check nulls, NaN, negatives and enum values too.

    Raises:
        StorageError: The URI is missing, unreadable or an incomplete dataset folder.
        SchemaError: The content does not match ``schema``.
    """
    fs, path = filesystem(uri, s3)
    info = _check_readable(uri, fs, path)
    try:
        if info.type == pafs.FileType.File:
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


def list_partitions(uri: str, key: str, s3: S3Settings | None = None) -> list[str]:
    """Sorted values of Hive partition ``key`` (``key=value`` sub-folders) under a dataset."""
    fs, path = filesystem(uri, s3)
    _check_readable(uri, fs, path)
    values = []
    for info in fs.get_file_info(pafs.FileSelector(path)):
        name = info.base_name
        if info.type == pafs.FileType.Directory and name.startswith(f"{key}="):
            values.append(name.split("=", 1)[1])
    return sorted(values)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_table(table: pa.Table, uri: str, s3: S3Settings | None = None) -> None:
    """Write one Parquet file atomically."""
    fs, path = filesystem(uri, s3)
    if isinstance(fs, pafs.LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    write_bytes(_parquet_bytes(table), uri, s3)


class DatasetWriter:
    """Write a dataset folder in chunks, published atomically on ``close()``.

    Use as a context manager; an exception inside the block discards everything written::

        with DatasetWriter(uri, partition_cols=["date"]) as w:
            for chunk in chunks:
                w.write(chunk)

    Locally the folder is built beside the target and renamed into place; on S3 the files
    go straight to their final keys (after clearing the prefix) and ``_SUCCESS`` is written
    last. Each ``write`` call adds one file per partition, so memory stays bounded by the chunk.
    """

    def __init__(
        self, uri: str, *, partition_cols: list[str] | None = None, s3: S3Settings | None = None
    ):
        self.uri = uri
        self.partition_cols = partition_cols or []
        self._fs, self._path = filesystem(uri, s3)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._chunk = 0
        self.rows = 0
        if self._local:
            parent = Path(self._path).parent
            parent.mkdir(parents=True, exist_ok=True)
            self._staging = str(parent / f".{Path(self._path).name}.{uuid.uuid4().hex}.tmp")
        else:
            self._staging = self._path
            if self._fs.get_file_info(self._path).type != pafs.FileType.NotFound:
                self._fs.delete_dir_contents(self._path, missing_dir_ok=True)
        self._fs.create_dir(self._staging, recursive=True)

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        ds.write_dataset(
            table,
            self._staging,
            filesystem=self._fs,
            format="parquet",
            partitioning=self.partition_cols or None,
            partitioning_flavor="hive" if self.partition_cols else None,
            basename_template=f"part-{self._chunk:05d}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
        )
        self._chunk += 1
        self.rows += table.num_rows

    def close(self) -> None:
        with self._fs.open_output_stream(f"{self._staging}/{SUCCESS_MARKER}") as f:
            f.write(json.dumps({"rows": self.rows, "chunks": self._chunk}).encode())
        if self._local:
            target = Path(self._path)
            if target.exists():
                old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
                target.rename(old)
                os.rename(self._staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self._staging, target)

    def abort(self) -> None:
        if self._local:
            shutil.rmtree(self._staging, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self._fs.delete_dir_contents(self._path, missing_dir_ok=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dataset(
    tables: pa.Table | Iterable[pa.Table],
    uri: str,
    *,
    partition_cols: list[str] | None = None,
    s3: S3Settings | None = None,
) -> int:
    """Write one table or an iterable of chunks as a dataset folder; returns the row count."""
    chunks = [tables] if isinstance(tables, pa.Table) else tables
    with DatasetWriter(uri, partition_cols=partition_cols, s3=s3) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.rows


def iter_dataset_batches(
    uri: str, *, s3: S3Settings | None = None, batch_rows: int = 1_000_000
) -> Iterator[pa.RecordBatch]:
    """Stream record batches from a Parquet file or dataset folder without loading it all."""
    fs, path = filesystem(uri, s3)
    info = _check_readable(uri, fs, path)
    partitioning = None if info.type == pafs.FileType.File else "hive"
    dataset = ds.dataset(
        path, filesystem=fs, format="parquet", partitioning=partitioning, ignore_prefixes=[".", "_"]
    )
    yield from dataset.to_batches(batch_size=batch_rows)


# ---------------------------------------------------------------- JSON Lines


def read_jsonl(
    uri: str, schema: pa.Schema | None = None, *, s3: S3Settings | None = None
) -> pa.Table:
    """Read newline-delimited JSON; timestamps as ISO-8601 strings. Validates like Parquet."""
    import pyarrow.json as pajson

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


def write_jsonl(table: pa.Table, uri: str, s3: S3Settings | None = None) -> None:
    """Write a table as JSON Lines (one object per row, timestamps ISO-8601), atomically.

    Floats are written with full precision, so a round trip through ``read_jsonl`` is exact.
    Rows are encoded in batches into a local temporary file, so memory stays bounded by a
    batch, then the file is renamed into place (local) or uploaded (S3).
    """
    import msgspec

    encoder = msgspec.json.Encoder()
    fs, path = filesystem(uri, s3)
    local = isinstance(fs, pafs.LocalFileSystem)
    if local:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=".part-", suffix=".jsonl.tmp", dir=str(Path(path).parent) if local else None
    )
    try:
        with os.fdopen(fd, "wb") as f:
            for batch in table.to_batches(max_chunksize=65_536):
                f.write(b"".join(encoder.encode(row) + b"\n" for row in batch.to_pylist()))
        _publish(tmp, fs, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# ---------------------------------------------------------------- folders (artifacts, bundles)


def upload_dir(local_dir: str | Path, uri: str, s3: S3Settings | None = None) -> None:
    """Copy a local folder to a local path or S3 prefix; ``_SUCCESS`` (if any) goes last."""
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == SUCCESS_MARKER)
    for file in files:
        write_bytes(file.read_bytes(), join(uri, file.relative_to(local_dir).as_posix()), s3)


def download_dir(uri: str, local_dir: str | Path, s3: S3Settings | None = None) -> Path:
    """Copy a folder (local or S3 prefix) into ``local_dir``; returns ``local_dir``."""
    fs, path = filesystem(uri, s3)
    local_dir = Path(local_dir)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    if not infos and fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: no such folder")
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(path) :].lstrip("/")
        dest = local_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as f:
            dest.write_bytes(f.read())
    return local_dir


class ParquetStreamWriter:
    """Write one Parquet file chunk by chunk; it appears at ``uri`` only on success.

    Chunks go to a local temporary file (row group per ``write``), which is renamed into
    place (local) or uploaded in one go (S3) when the block ends without an exception::

        with ParquetStreamWriter(uri, schema) as w:
            for table in chunks:
                w.write(table)
    """

    def __init__(self, uri: str, schema: pa.Schema, s3: S3Settings | None = None):
        self.uri, self.schema, self._s3 = uri, schema, s3
        self.rows = 0
        self._fs, self._path = filesystem(uri, s3)
        tmp_dir = None
        if isinstance(self._fs, pafs.LocalFileSystem):
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            tmp_dir = str(Path(self._path).parent)
        fd, self._tmp = tempfile.mkstemp(prefix=".part-", suffix=".parquet.tmp", dir=tmp_dir)
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._writer.close()
            if exc_type is None:
                _publish(self._tmp, self._fs, self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
