"""Single objects (run records, cache entries, plain copies): bytes and JSON, atomically.

A single object is not a stage output: stages publish through ``publish``. Reading a
published single-file output resolves (and verifies) it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from components.contracts.settings import S3Settings
from components.contracts.storage.fs import (
    StorageError,
    atomic_file,
    dumps,
    filesystem,
    join,
    loads,
)
from components.contracts.storage.marker import SUCCESS_MARKER
from components.contracts.storage.outputs import open_output


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
    """Write one object atomically (``atomic_file``: temp + rename locally, one PUT on S3)."""
    with atomic_file(uri, s3) as tmp:
        Path(tmp).write_bytes(data)


def read_json(uri: str, s3: S3Settings | None = None) -> Any:
    return loads(read_bytes(uri, s3), uri)


def write_json(obj: Any, uri: str, s3: S3Settings | None = None) -> None:
    write_bytes(dumps(obj), uri, s3)


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
