"""The one storage module: Parquet, JSON Lines and JSON on local paths and ``s3://`` URIs.

Publishing (the one rule, for local paths and ``s3://`` alike; no rename needed)
------------------------------------------------------------------------------
Every stage output is a folder holding a pointer and immutable versions::

    <output>/_SUCCESS              the marker: commit id, version, kind, sha256 + size of
                                   every file, the stage's sibling outputs, previous version
    <output>/v-<commit>/...        one published version (a single file, or a folder tree)

A stage publishes through one ``Publication`` (``with storage.publish(stage) as pub``):

1. **stage** - every output is written under a fresh ``<output>/v-<commit>/`` prefix, which
   no reader ever looks at (readers go through ``_SUCCESS``);
2. **verify** - each staged version is listed and read back: sha256 and size of every file
   (files staged in a local folder and uploaded must read back with their local digest);
3. **switch** - only when *all* outputs are staged and verified, each output's ``_SUCCESS``
   is replaced in one atomic step (rename locally, one PUT on S3), in the order the outputs
   were staged. Each marker names the commit, the sibling outputs and the version it
   replaces (``previous``);
4. **collect** - after the last switch, the replaced versions are deleted.

Until its ``_SUCCESS`` is replaced the previous version stays complete and readable; a
failure or kill before step 3 changes nothing a reader sees.

Several outputs commit together (the exact rule): a reader opening one output also reads
the markers of its siblings (those that still exist at the recorded URI and still name
this output as a sibling; an orchestrator that moved the artifacts elsewhere, as KFP's
launcher and the local runner's S3 upload do, already published them all or none). The output's *committed* version is its current one if every sibling's current
commit is the same; otherwise (a kill between two switches) it is the newest commit that
every output holds as current or ``previous``, which is the stage's last complete commit
(its files are kept until every switch is done). If no such commit exists the read fails.
So a reader sees either the old or the new set of a stage's outputs, never a mix.

Consumers refuse anything without its marker: ``open_output``, ``read_table``,
``read_jsonl``, ``iter_dataset_batches`` and ``list_partitions`` raise ``StorageError``
(one line naming the path; the stage CLIs exit 2) for a folder without a valid
``_SUCCESS``, a plain file outside a published version (unless ``require_marker=False``,
for files that are not stage outputs, e.g. a bundle's own members), a missing, truncated or
unlisted file, or an incomplete multi-output commit. ``read_bytes``/``read_json`` read single
objects (run records, cache entries) and resolve a published output when given one.

Leftover staging is cleaned on the next publish of the same output (only that output's
own prefix and its legacy ``.<name>.*`` siblings). Ownership rule: a version that no
marker references is deleted when its commit id names this host and a process id that is
no longer running (or this very process: it stages an output once per publication), or
when it is older than ``STAGING_GRACE_S`` (a writer on another host); another live
writer's fresh staging is never touched. Legacy staging names of the
pre-versioned code (``.<name>.<uuid32>.tmp|.old``, ``.<name>.tmp-|old-<uuid32>``,
``.<name>.<mkstemp>.tmp``) are deleted outright: current code never creates them, and a
folder holding a pre-versioned output (files beside no or a foreign marker) is cleared of
it after the first switch (an output folder belongs to its stage, as it always did).

Reads validate against a declared schema (``schemas.validate_table``) and name the file and
column on error. S3 endpoint, region and credentials come from ``settings.S3Settings``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from components.contracts.schemas import SchemaError, validate_table
from components.contracts.settings import S3Settings

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
MARKER_FORMAT = "cashier-integrity-output"
MARKER_VERSION = 1
VERSION_PREFIX = "v-"
STAGING_GRACE_S = 6 * 3600
"""Age after which an unreferenced version of another host's writer counts as abandoned."""
FAULT_ENV = "STORAGE_FAULT_KILL_AT"
"""Test hook: comma-separated publish points (``write-<k>``, ``staged``, ``switch-<k>``,
``switched``) at which the process SIGKILLs itself, for the fault-injection tests."""
_CHUNK = 1 << 20
_COMMIT_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})-(\d+)-([0-9a-f]{8})$")


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


def _uri(fs: pafs.FileSystem, path: str) -> str:
    return path if isinstance(fs, pafs.LocalFileSystem) else f"s3://{path}"


def normalize(uri: str) -> str:
    """The canonical form of an output URI (absolute local path, or ``s3://`` without '/')."""
    return str(uri).rstrip("/") if is_s3(uri) else str(Path(uri).resolve())


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI."""
    base = str(uri).rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def exists(uri: str, s3: S3Settings | None = None) -> bool:
    fs, path = filesystem(uri, s3)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _fault(point: str) -> None:
    """Test hook (``STORAGE_FAULT_KILL_AT``): die here as a SIGKILL would kill the stage."""
    points = os.environ.get(FAULT_ENV)
    if points and point in points.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- the one digest helper


def file_digest(uri: str, s3: S3Settings | None = None) -> dict[str, Any]:
    """``{"sha256": hex, "size": bytes}`` of one file (local path or ``s3://`` URI)."""
    fs, path = filesystem(uri, s3)
    return _digest(fs, path)


def _digest(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    h, size = hashlib.sha256(), 0
    with fs.open_input_stream(path) as f:
        while block := f.read(_CHUNK):
            h.update(block)
            size += len(block)
    return {"sha256": h.hexdigest(), "size": size}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (local path or ``s3://`` URI)."""
    return file_digest(str(path))["sha256"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- single objects (raw)


def _publish_tmp(tmp: str, fs: pafs.FileSystem, path: str) -> None:
    """Move a finished local temp file to its target: rename locally, one upload on S3."""
    if isinstance(fs, pafs.LocalFileSystem):
        os.replace(tmp, path)
        return
    with open(tmp, "rb") as src, fs.open_output_stream(path) as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)


def read_bytes(uri: str, s3: S3Settings | None = None) -> bytes:
    """Bytes of one object; a published single-file output is resolved (and verified)."""
    fs, path = filesystem(uri, s3)
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc
    if info.type == pafs.FileType.Directory:
        return open_output(uri, s3).read_bytes()
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise StorageError(f"{uri}: no such file") from exc
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc


def write_bytes(data: bytes, uri: str, s3: S3Settings | None = None) -> None:
    """Write one object atomically (temp + rename locally, one upload on S3).

    A single object is not a stage output: stages publish through ``publish``.
    """
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
    try:
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot write ({exc})") from exc


def _loads(raw: bytes, uri: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc})") from exc


def read_json(uri: str, s3: S3Settings | None = None) -> Any:
    return _loads(read_bytes(uri, s3), uri)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def write_json(obj: Any, uri: str, s3: S3Settings | None = None) -> None:
    write_bytes(_dumps(obj), uri, s3)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_table(table: pa.Table, uri: str, s3: S3Settings | None = None) -> None:
    """Write one Parquet file atomically (a single object; stages use ``publish``)."""
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
        _publish_tmp(tmp, fs, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class ParquetStreamWriter:
    """Write one Parquet file chunk by chunk; it appears at ``uri`` only on success.

    Chunks go to a local temporary file (row group per ``write``), which is renamed into
    place (local) or uploaded in one go (S3) when the block ends without an exception::

        with ParquetStreamWriter(pub.file(out), schema) as w:
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
                _publish_tmp(self._tmp, self._fs, self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


# ---------------------------------------------------------------- published outputs: reading


def _stat(uri: str, fs: pafs.FileSystem, path: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc


def _read_marker(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """The output marker at ``path/_SUCCESS``; None when absent. Raises on a foreign one."""
    marker_path = f"{path}/{SUCCESS_MARKER}"
    try:
        with fs.open_input_stream(marker_path) as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if fs.get_file_info(marker_path).type == pafs.FileType.NotFound:
            return None
        raise StorageError(f"{_uri(fs, marker_path)}: cannot read ({exc})") from exc
    marker = _loads(raw, _uri(fs, marker_path))
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        raise StorageError(
            f"{_uri(fs, marker_path)}: not a {MARKER_FORMAT} marker (written by an older "
            "version or by hand); re-run the stage that produces it"
        )
    if marker.get("format_version") != MARKER_VERSION:
        raise StorageError(
            f"{_uri(fs, marker_path)}: marker format_version {marker.get('format_version')!r} "
            f"is not {MARKER_VERSION}"
        )
    return marker


def _state(marker: dict[str, Any]) -> dict[str, Any]:
    """A marker's current version (without its ``previous``)."""
    return {k: v for k, v in marker.items() if k != "previous"}


def _committed_state(uri: str, marker: dict[str, Any], s3: S3Settings | None) -> dict[str, Any]:
    """The version of ``uri`` that belongs to its stage's last complete commit (module doc)."""
    siblings = [u for u in marker.get("outputs", []) if u != uri]
    if not siblings:
        return _state(marker)
    others: dict[str, dict[str, Any] | None] = {}
    for sibling in siblings:
        fs, path = filesystem(sibling, s3)
        if _stat(sibling, fs, path).type == pafs.FileType.NotFound:
            continue  # moved by an orchestrator that publishes a task's outputs all or none
        other = _read_marker(fs, path)
        if other is not None and uri not in other.get("outputs", []):
            continue  # rewritten since by a publication this output was not part of
        others[sibling] = other
    candidates = [_state(marker)] + ([marker["previous"]] if marker.get("previous") else [])
    for candidate in candidates:
        commit = candidate["commit"]
        if all(
            m is not None and commit in (m["commit"], (m.get("previous") or {}).get("commit"))
            for m in others.values()
        ):
            return candidate
    differing = ", ".join(f"{u} ({m['commit'] if m else 'no marker'})" for u, m in others.items())
    raise StorageError(
        f"{uri}: commit {marker['commit']} of stage {marker.get('stage')!r} is incomplete "
        f"(sibling outputs: {differing}); re-run the stage"
    )


@dataclass(frozen=True)
class Output:
    """One published output, resolved to its committed version (see ``open_output``)."""

    uri: str
    fs: pafs.FileSystem
    root: str
    state: dict[str, Any]

    @property
    def commit(self) -> str:
        return self.state["commit"]

    @property
    def version(self) -> str:
        return self.state["version"]

    @property
    def kind(self) -> str:
        return self.state["kind"]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Relative path -> ``{"sha256", "size"}`` of every file of this version."""
        return self.state["files"]

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.state.get("meta") or {})

    def _rel(self, rel: str | None) -> str | None:
        if rel is None and self.kind == "file":
            return self.state["name"]
        return rel.strip("/") if rel else None

    def path(self, rel: str | None = None) -> str:
        """Filesystem path of the version (a folder output) or of one listed file."""
        rel = self._rel(rel)
        base = f"{self.root}/{self.version}"
        if rel is None:
            return base
        if rel not in self.files:
            raise StorageError(f"{join(self.uri, rel)}: not listed in {SUCCESS_MARKER}")
        return f"{base}/{rel}"

    def uri_of(self, rel: str | None = None) -> str:
        """Local path or ``s3://`` URI of ``path(rel)``."""
        return _uri(self.fs, self.path(rel))

    def has(self, rel: str) -> bool:
        return rel.strip("/") in self.files

    def read_bytes(self, rel: str | None = None) -> bytes:
        """Bytes of one listed file, checked against its recorded sha256."""
        path = self.path(rel)
        try:
            with self.fs.open_input_stream(path) as f:
                data = f.read()
        except OSError as exc:
            raise StorageError(f"{_uri(self.fs, path)}: cannot read ({exc})") from exc
        expected = self.files[self._rel(rel)]["sha256"]
        if sha256_bytes(data) != expected:
            raise StorageError(
                f"{_uri(self.fs, path)}: sha256 does not match {SUCCESS_MARKER} (modified)"
            )
        return data

    def read_json(self, rel: str | None = None) -> Any:
        return _loads(self.read_bytes(rel), self.uri_of(rel))

    def check(self) -> None:
        """Every listed file present with its size, nothing unlisted (one listing)."""
        base = f"{self.root}/{self.version}"
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        except FileNotFoundError:
            infos = []
        except OSError as exc:
            raise StorageError(f"{_uri(self.fs, base)}: cannot list ({exc})") from exc
        found = {
            i.path[len(base) :].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File
        }
        for rel, entry in self.files.items():
            if rel not in found:
                raise StorageError(f"{_uri(self.fs, f'{base}/{rel}')}: listed but missing")
            if found[rel] != entry["size"]:
                raise StorageError(
                    f"{_uri(self.fs, f'{base}/{rel}')}: {found[rel]} bytes, "
                    f"{SUCCESS_MARKER} says {entry['size']} (truncated or modified)"
                )
        extra = sorted(set(found) - set(self.files))
        if extra:
            raise StorageError(
                f"{_uri(self.fs, f'{base}/{extra[0]}')}: not listed in {SUCCESS_MARKER}"
            )


def open_output(uri: str, s3: S3Settings | None = None) -> Output:
    """Resolve a published output to its committed version and check its files.

    Raises:
        StorageError: One line naming the path: no such output, no (or a foreign)
            ``_SUCCESS`` marker, an incomplete multi-output commit, a missing, truncated
            or unlisted file.
    """
    uri = normalize(uri)
    fs, path = filesystem(uri, s3)
    info = _stat(uri, fs, path)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: no such file or folder")
    if info.type != pafs.FileType.Directory:
        raise StorageError(
            f"{uri}: a plain file, not a published output (no {SUCCESS_MARKER} marker)"
        )
    marker = _read_marker(fs, path)
    if marker is None:
        raise StorageError(
            f"{uri}: folder has no {SUCCESS_MARKER} marker (incomplete, or not a stage output)"
        )
    out = Output(uri, fs, path, _committed_state(uri, marker, s3))
    out.check()
    return out


def is_complete_dataset(uri: str, s3: S3Settings | None = None) -> bool:
    """True when ``uri`` is a published output whose committed version checks out."""
    try:
        open_output(uri, s3)
    except StorageError:
        return False
    return True


def _member_of_output(uri: str, fs: pafs.FileSystem, path: str, s3) -> bool:
    """True when a plain file is listed in the committed version of its output."""
    parent, _, name = path.rpartition("/")
    root, _, version = parent.rpartition("/")
    if not version.startswith(VERSION_PREFIX) or not root:
        return False
    try:
        out = open_output(_uri(fs, root), s3)
    except StorageError:
        return False
    return out.version == version and name in out.files


def _resolve_data(
    uri: str, s3: S3Settings | None, require_marker: bool
) -> tuple[pafs.FileSystem, str, bool]:
    """(fs, path, is_file) of the data a table reader should open."""
    fs, path = filesystem(uri, s3)
    info = _stat(uri, fs, path)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: no such file or folder")
    if info.type == pafs.FileType.File:
        if require_marker and not _member_of_output(uri, fs, path, s3):
            raise StorageError(
                f"{uri}: a plain file, not a published output (no {SUCCESS_MARKER} marker)"
            )
        return fs, path, True
    out = open_output(uri, s3)
    return out.fs, out.path(), out.kind == "file"


def list_partitions(uri: str, key: str, s3: S3Settings | None = None) -> list[str]:
    """Sorted values of Hive partition ``key`` (``key=value`` sub-folders) of an output."""
    out = open_output(uri, s3)
    values = {
        rel.split("/", 1)[0].split("=", 1)[1]
        for rel in out.files
        if "/" in rel and rel.startswith(f"{key}=")
    }
    return sorted(values)


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
    fs, path, is_file = _resolve_data(uri, s3, require_marker)
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
    fs, path, is_file = _resolve_data(uri, s3, True)
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
    if _stat(uri, fs, path).type == pafs.FileType.Directory:
        raw = open_output(uri, s3).read_bytes()
    else:
        _resolve_data(uri, s3, require_marker)
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


# ---------------------------------------------------------------- published outputs: writing


_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def new_commit_id() -> str:
    """``<UTC time>-<host tag>-<pid>-<random>``: sortable, and names its writer."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{_HOST_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned(commit: str, now: float | None = None) -> bool:
    """The ownership rule for an unreferenced version or marker temp (module doc)."""
    m = _COMMIT_RE.match(commit)
    if not m:
        return False  # not named by us: never ours to delete
    started = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    age = (now or time.time()) - started.timestamp()
    if age > STAGING_GRACE_S:
        return True
    pid = int(m.group(3))
    # This process stages each output once per publication: its other versions are left
    # over from an earlier, failed publication.
    return m.group(2) == _HOST_TAG and (pid == os.getpid() or not _pid_alive(pid))


def _delete(fs: pafs.FileSystem, path: str, is_dir: bool) -> None:
    with contextlib.suppress(FileNotFoundError):
        if is_dir:
            fs.delete_dir(path)
        else:
            fs.delete_file(path)


def _legacy_junk(name: str) -> re.Pattern[str]:
    n = re.escape(name)
    return re.compile(
        rf"^\.{n}\.([0-9a-f]{{32}}\.(tmp|old)|(tmp|old)-[0-9a-f]{{32}}|[a-z0-9_]{{8}}\.tmp)$"
    )


def clean_staging(uri: str, s3: S3Settings | None = None, *, keep: Iterable[str] = ()) -> int:
    """Delete an output's abandoned staging (ownership rule, module doc); returns the count.

    Versions referenced by the output's marker (current and ``previous``) and ``keep`` stay.
    """
    uri = normalize(uri)
    fs, path = filesystem(uri, s3)
    removed = 0
    marker = None
    with contextlib.suppress(StorageError):
        if _stat(uri, fs, path).type == pafs.FileType.Directory:
            marker = _read_marker(fs, path)
    referenced = set(keep)
    if marker:
        referenced.add(marker["version"])
        if marker.get("previous"):
            referenced.add(marker["previous"]["version"])
    try:
        entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        entries = []
    for info in entries:
        name = info.base_name
        if name.startswith(VERSION_PREFIX) and name not in referenced:
            commit = name.removeprefix(VERSION_PREFIX)
        elif name.startswith(f".{SUCCESS_MARKER}.") and name.endswith(".tmp"):
            commit = name.removeprefix(f".{SUCCESS_MARKER}.").removesuffix(".tmp")
        else:
            continue
        if _abandoned(commit):
            _delete(fs, info.path, info.type == pafs.FileType.Directory)
            removed += 1
    if isinstance(fs, pafs.LocalFileSystem):
        parent, pattern = Path(path).parent, _legacy_junk(Path(path).name)
        for junk in parent.glob(f".{Path(path).name}.*") if parent.is_dir() else []:
            if pattern.match(junk.name):
                if junk.is_dir():
                    shutil.rmtree(junk, ignore_errors=True)
                else:
                    junk.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("cleaned %d leftover staging entries of %s", removed, uri)
    return removed


def _ours(name: str) -> bool:
    """Names the publishing rule creates inside an output folder."""
    return (
        name == SUCCESS_MARKER
        or name.startswith(VERSION_PREFIX)
        or name.startswith(f".{SUCCESS_MARKER}.")
    )


def _legacy_layout(fs: pafs.FileSystem, path: str) -> bool:
    """True when an output folder holds files of the pre-versioned layout (no/foreign marker)."""
    try:
        if _read_marker(fs, path) is not None:
            return False
    except StorageError:
        return True
    entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(not _ours(i.base_name) for i in entries)


@dataclass
class _Pending:
    uri: str
    fs: pafs.FileSystem
    root: str
    kind: str
    name: str | None = None
    local: Path | None = None  # a local temp folder uploaded at commit (s3 targets)
    created_root: bool = False
    legacy: bool = False  # the folder holds a pre-versioned output: cleared after the switch
    meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


class Publication:
    """One stage's commit of all its outputs (the rule is in the module docstring).

    Use ``publish(stage)``; inside the block ask for a place to write each output:
    ``folder(uri)`` / ``file(uri)`` (a path or URI inside the fresh version) or
    ``local_folder(uri)`` (a local folder, uploaded at commit for an ``s3://`` target).
    """

    def __init__(self, stage: str, s3: S3Settings | None = None):
        self.stage = stage
        self.s3 = s3
        self.commit_id = new_commit_id()
        self.version = f"{VERSION_PREFIX}{self.commit_id}"
        self._outputs: dict[str, _Pending] = {}
        self._switched: set[str] = set()
        self.committed = False

    # -- staging
    def _add(self, uri: str, kind: str, name: str | None = None) -> _Pending:
        uri = normalize(uri)
        if uri in self._outputs:
            raise ValueError(f"{uri}: output staged twice in one publication")
        fs, path = filesystem(uri, self.s3)
        info = _stat(uri, fs, path)
        if info.type == pafs.FileType.File:
            fs.delete_file(path)  # a pre-versioned single-file output: no reader trusts it
        created = info.type != pafs.FileType.Directory
        legacy = not created and _legacy_layout(fs, path)
        clean_staging(uri, self.s3)
        p = _Pending(uri, fs, path, kind, name, created_root=created, legacy=legacy)
        if isinstance(fs, pafs.LocalFileSystem):
            Path(self._vpath(p)).mkdir(parents=True)
        self._outputs[uri] = p
        return p

    def _vpath(self, p: _Pending) -> str:
        return f"{p.root}/{self.version}"

    def folder(self, uri: str) -> str:
        """Path or URI of a fresh version folder for output ``uri`` (write anything in it)."""
        p = self._add(uri, "folder")
        return _uri(p.fs, self._vpath(p))

    def file(self, uri: str, name: str | None = None) -> str:
        """Path or URI to write the single file of output ``uri`` to (any single-object
        writer: ``write_json``, ``write_table``, ``ParquetStreamWriter``...)."""
        p = self._add(uri, "file", name or normalize(uri).rsplit("/", 1)[-1])
        return _uri(p.fs, f"{self._vpath(p)}/{p.name}")

    def local_folder(self, uri: str) -> Path:
        """A local folder to fill for output ``uri`` (uploaded at commit if ``uri`` is S3)."""
        p = self._add(uri, "folder")
        if isinstance(p.fs, pafs.LocalFileSystem):
            return Path(self._vpath(p))
        p.local = Path(tempfile.mkdtemp(prefix=f"stage-{self.stage}-"))
        return p.local

    def set_meta(self, uri: str, **meta: Any) -> None:
        """Small facts recorded in the output's marker (e.g. ``rows``)."""
        self._outputs[normalize(uri)].meta.update(meta)

    # -- verify and switch
    def _upload(self, p: _Pending) -> dict[str, dict[str, Any]]:
        expected = {}
        files = sorted(f for f in p.local.rglob("*") if f.is_file())
        for f in files:
            rel = f.relative_to(p.local).as_posix()
            expected[rel] = _digest(pafs.LocalFileSystem(), str(f))
            dest = f"{self._vpath(p)}/{rel}"
            try:
                with open(f, "rb") as src, p.fs.open_output_stream(dest) as dst:
                    shutil.copyfileobj(src, dst, length=8 << 20)
            except OSError as exc:
                raise StorageError(f"{_uri(p.fs, dest)}: cannot write ({exc})") from exc
        return expected

    def _inventory(self, p: _Pending) -> dict[str, dict[str, Any]]:
        base = self._vpath(p)
        try:
            infos = p.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        except FileNotFoundError:
            infos = []
        except OSError as exc:
            raise StorageError(f"{_uri(p.fs, base)}: cannot list ({exc})") from exc
        files = {}
        for info in sorted(infos, key=lambda i: i.path):
            if info.type != pafs.FileType.File:
                continue
            try:
                files[info.path[len(base) :].lstrip("/")] = _digest(p.fs, info.path)
            except OSError as exc:
                raise StorageError(f"{_uri(p.fs, info.path)}: cannot read ({exc})") from exc
        return files

    def _write_marker(self, p: _Pending, marker: dict[str, Any]) -> None:
        data = _dumps(marker)
        target = f"{p.root}/{SUCCESS_MARKER}"
        if isinstance(p.fs, pafs.LocalFileSystem):
            tmp = Path(p.root) / f".{SUCCESS_MARKER}.{self.commit_id}.tmp"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            return
        try:
            with p.fs.open_output_stream(target) as f:  # one PUT: atomic on S3
                f.write(data)
        except OSError as exc:
            raise StorageError(f"{_uri(p.fs, target)}: cannot write ({exc})") from exc

    def commit(self) -> None:
        """Verify every staged output, then switch all markers, then collect old versions."""
        if self.committed:
            return
        for p in self._outputs.values():
            expected = self._upload(p) if p.local is not None else None
            p.files = self._inventory(p)
            if expected is not None and p.files != expected:
                raise StorageError(f"{p.uri}: uploaded files do not read back as written")
            if p.kind == "file" and list(p.files) != [p.name]:
                raise StorageError(f"{p.uri}: single-file output {p.name!r} was not written")
        _fault("staged")
        previous = {}
        for uri in self._outputs:
            try:
                previous[uri] = open_output(uri, self.s3).state
            except StorageError:
                previous[uri] = None
        siblings = list(self._outputs)
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for k, (uri, p) in enumerate(self._outputs.items(), start=1):
            marker = {
                "format": MARKER_FORMAT,
                "format_version": MARKER_VERSION,
                "stage": self.stage,
                "commit": self.commit_id,
                "version": self.version,
                "created_at": created,
                "kind": p.kind,
                **({"name": p.name} if p.kind == "file" else {}),
                "files": p.files,
                "meta": p.meta,
                "outputs": siblings,
                "previous": previous[uri],
            }
            self._write_marker(p, marker)
            self._switched.add(uri)
            _fault(f"switch-{k}")
        self.committed = True
        _fault("switched")
        for uri, p in self._outputs.items():
            old = previous[uri]
            if old and old["version"] != self.version:
                _delete(p.fs, f"{p.root}/{old['version']}", True)
            with contextlib.suppress(OSError):
                clean_staging(uri, self.s3, keep=[self.version])
                if p.legacy:
                    for info in p.fs.get_file_info(pafs.FileSelector(p.root)):
                        if not _ours(info.base_name):
                            _delete(p.fs, info.path, info.type == pafs.FileType.Directory)
            if p.local is not None:
                shutil.rmtree(p.local, ignore_errors=True)
        log.info("%s: committed %d output(s) as %s", self.stage, len(siblings), self.commit_id)

    def abort(self) -> None:
        """Best effort: drop this publication's staged versions (the next run cleans the rest)."""
        if self.committed:
            return
        for uri, p in self._outputs.items():
            if p.local is not None:
                shutil.rmtree(p.local, ignore_errors=True)
            if uri in self._switched:  # referenced: readers resolve the old set (module doc)
                continue
            with contextlib.suppress(OSError):
                _delete(p.fs, self._vpath(p), True)
                if p.created_root and not self._switched and isinstance(p.fs, pafs.LocalFileSystem):
                    with contextlib.suppress(OSError):
                        os.rmdir(p.root)


@contextlib.contextmanager
def publish(stage: str, s3: S3Settings | None = None) -> Iterator[Publication]:
    """Commit every output staged in the block together when it succeeds; else none."""
    pub = Publication(stage, s3)
    try:
        yield pub
        pub.commit()
    except BaseException:
        pub.abort()
        raise


@contextlib.contextmanager
def staged_dir(uri: str, *, stage: str = "output", s3: S3Settings | None = None) -> Iterator[Path]:
    """Fill a local folder; it is published as output ``uri`` if the block succeeds."""
    with publish(stage, s3) as pub:
        yield pub.local_folder(uri)


def publish_json(obj: Any, uri: str, s3: S3Settings | None = None, *, stage: str = "json") -> None:
    """Publish one JSON document as a single-file output."""
    with publish(stage, s3) as pub:
        write_json(obj, pub.file(uri), s3)


def publish_table(
    table: pa.Table, uri: str, s3: S3Settings | None = None, *, stage: str = "table"
) -> None:
    """Publish one Parquet table as a single-file output."""
    with publish(stage, s3) as pub:
        write_table(table, pub.file(uri), s3)


def publish_file(
    local: str | Path, uri: str, s3: S3Settings | None = None, *, stage: str = "file"
) -> None:
    """Publish a local file's bytes as a single-file output."""
    with publish(stage, s3) as pub:
        write_bytes(Path(local).read_bytes(), pub.file(uri), s3)


def publish_dir(
    local_dir: str | Path, uri: str, s3: S3Settings | None = None, *, stage: str = "folder"
) -> None:
    """Publish a copy of a local folder's files as a folder output."""
    local_dir = Path(local_dir)
    with publish(stage, s3) as pub:
        target = pub.folder(uri)
        for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            write_bytes(file.read_bytes(), join(target, file.relative_to(local_dir).as_posix()), s3)


class DatasetWriter:
    """Write a Parquet dataset folder in chunks as one published output.

    Standalone it is its own publication (committed on ``close``); pass ``publication=``
    to commit it with a stage's other outputs::

        with DatasetWriter(uri, partition_cols=["date"]) as w:
            for chunk in chunks:
                w.write(chunk)

    Each ``write`` call adds one file per partition, so memory stays bounded by the chunk.
    """

    def __init__(
        self,
        uri: str,
        *,
        partition_cols: list[str] | None = None,
        s3: S3Settings | None = None,
        publication: Publication | None = None,
    ):
        self.uri = normalize(uri)
        self.partition_cols = partition_cols or []
        self._own = publication is None
        self._pub = publication or Publication("dataset", s3)
        self._fs, self._staging = filesystem(self._pub.folder(self.uri), s3)
        self._chunk = 0
        self.rows = 0

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
        self._pub.set_meta(self.uri, rows=self.rows, chunks=self._chunk)
        _fault(f"write-{self._chunk}")

    def close(self) -> None:
        self._pub.set_meta(self.uri, rows=self.rows, chunks=self._chunk)
        if self._own:
            self._pub.commit()

    def abort(self) -> None:
        if self._own:
            self._pub.abort()

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
    """Publish one table or an iterable of chunks as a dataset output; returns the row count."""
    chunks = [tables] if isinstance(tables, pa.Table) else tables
    with DatasetWriter(uri, partition_cols=partition_cols, s3=s3) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.rows


# ---------------------------------------------------------------- folders (raw copies)


def upload_dir(local_dir: str | Path, uri: str, s3: S3Settings | None = None) -> None:
    """Copy a local folder verbatim to a local path or S3 prefix; ``_SUCCESS`` files last.

    A verbatim copy (the runner moves finished task outputs with it); a stage publishes
    with ``publish``.
    """
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == SUCCESS_MARKER)
    for file in files:
        write_bytes(file.read_bytes(), join(uri, file.relative_to(local_dir).as_posix()), s3)


def download_dir(uri: str, local_dir: str | Path, s3: S3Settings | None = None) -> Path:
    """Copy a folder (local or S3 prefix) verbatim into ``local_dir``; returns ``local_dir``."""
    fs, path = filesystem(uri, s3)
    local_dir = Path(local_dir)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
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
