"""Writing published outputs: one ``Publication`` per stage (stage, verify, switch, collect).

The rule is in the package docstring (``components.contracts.storage``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from components.contracts.settings import S3Settings
from components.contracts.storage.fs import (
    StorageError,
    atomic_file,
    delete,
    digest,
    dumps,
    fault,
    filesystem,
    join,
    list_files,
    normalize,
    put_file,
    stat,
    to_uri,
)
from components.contracts.storage.marker import (
    SUCCESS_MARKER,
    VERSION_PREFIX,
    clean_staging,
    is_ours,
    legacy_layout,
    make_marker,
    new_commit_id,
)
from components.contracts.storage.objects import write_bytes, write_json
from components.contracts.storage.outputs import open_output
from components.contracts.storage.tables import write_table

log = logging.getLogger(__name__)


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
        info = stat(uri, fs, path)
        if info.type == pafs.FileType.File:
            fs.delete_file(path)  # a pre-versioned single-file output: no reader trusts it
        created = info.type != pafs.FileType.Directory
        legacy = not created and legacy_layout(fs, path)
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
        return to_uri(p.fs, self._vpath(p))

    def file(self, uri: str, name: str | None = None) -> str:
        """Path or URI to write the single file of output ``uri`` to (any single-object
        writer: ``write_json``, ``write_table``, ``ParquetStreamWriter``...)."""
        p = self._add(uri, "file", name or normalize(uri).rsplit("/", 1)[-1])
        return to_uri(p.fs, f"{self._vpath(p)}/{p.name}")

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
        for f in sorted(f for f in p.local.rglob("*") if f.is_file()):
            rel = f.relative_to(p.local).as_posix()
            expected[rel] = digest(pafs.LocalFileSystem(), str(f))
            put_file(f, p.fs, f"{self._vpath(p)}/{rel}")
        return expected

    def _inventory(self, p: _Pending) -> dict[str, dict[str, Any]]:
        base = self._vpath(p)
        files = {}
        for info in list_files(p.fs, base):
            try:
                files[info.path[len(base) :].lstrip("/")] = digest(p.fs, info.path)
            except OSError as exc:
                raise StorageError(f"{to_uri(p.fs, info.path)}: cannot read ({exc})") from exc
        return files

    def _write_marker(self, p: _Pending, marker: dict[str, Any]) -> None:
        """Replace ``_SUCCESS`` in one step (rename locally, one PUT on S3)."""
        target = to_uri(p.fs, f"{p.root}/{SUCCESS_MARKER}")
        with atomic_file(target, self.s3, tag=self.commit_id) as tmp:
            Path(tmp).write_bytes(dumps(marker))

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
        fault("staged")
        previous = {}
        for uri in self._outputs:
            try:
                previous[uri] = open_output(uri, self.s3).state
            except StorageError:
                previous[uri] = None
        siblings = list(self._outputs)
        for k, (uri, p) in enumerate(self._outputs.items(), start=1):
            marker = make_marker(
                stage=self.stage,
                commit=self.commit_id,
                kind=p.kind,
                name=p.name,
                files=p.files,
                meta=p.meta,
                outputs=siblings,
                previous=previous[uri],
            )
            self._write_marker(p, marker)
            self._switched.add(uri)
            fault(f"switch-{k}")
        self.committed = True
        fault("switched")
        for uri, p in self._outputs.items():
            old = previous[uri]
            if old and old["version"] != self.version:
                delete(p.fs, f"{p.root}/{old['version']}", True)
            with contextlib.suppress(OSError):
                clean_staging(uri, self.s3, keep=[self.version])
                if p.legacy:
                    for info in p.fs.get_file_info(pafs.FileSelector(p.root)):
                        if not is_ours(info.base_name):
                            delete(p.fs, info.path, info.type == pafs.FileType.Directory)
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
                delete(p.fs, self._vpath(p), True)
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
        fault(f"write-{self._chunk}")

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
