"""Locations, the one digest helper and the one atomic single-object write.

Local paths and ``s3://`` URIs alike; S3 endpoint, region, credentials and the time budget
(``SERVICE_TIMEOUT_S``, see ``s3_budget``) come from ``settings.S3Settings``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from components.contracts.settings import S3Settings

FAULT_ENV = "STORAGE_FAULT_KILL_AT"
"""Test hook: comma-separated publish points (``write-<k>``, ``staged``, ``switch-<k>``,
``switched``) at which the process SIGKILLs itself, for the fault-injection tests."""
S3_ATTEMPTS = 3
"""Tries per S3 call (the first included); see ``s3_budget``."""
S3_BACKOFF_S = 3.0
"""Allowance for the standard retry strategy's random back-off over ``S3_ATTEMPTS`` tries
(1.7-2.5 s measured with pyarrow 25 against an endpoint that never answers)."""
CHUNK = 1 << 20


class StorageError(OSError):
    """A file or URI could not be read or written; the message names it."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def s3_budget(timeout_s: float) -> tuple[int, float]:
    """``(attempts, seconds per attempt)`` so an S3 call gives up within ``timeout_s``
    (``SERVICE_TIMEOUT_S``): ``S3_ATTEMPTS`` tries, each allowed that long to connect and
    that long without a byte of progress, plus ``S3_BACKOFF_S`` for the back-off between
    them. At least 1 s per try, so a knob under ~6 s is exceeded by up to the back-off."""
    return S3_ATTEMPTS, max(1.0, (float(timeout_s) - S3_BACKOFF_S) / S3_ATTEMPTS)


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
        attempts, per_attempt_s = s3_budget(s3.service_timeout_s)
        kwargs["connect_timeout"] = kwargs["request_timeout"] = per_attempt_s
        kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)
        if s3.access_key_id and s3.secret_access_key:
            kwargs["access_key"] = s3.access_key_id
            kwargs["secret_key"] = s3.secret_access_key
            if s3.session_token:
                kwargs["session_token"] = s3.session_token
        return pafs.S3FileSystem(**kwargs), uri.removeprefix("s3://").rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def to_uri(fs: pafs.FileSystem, path: str) -> str:
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


def stat(uri: str, fs: pafs.FileSystem, path: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc})") from exc


def list_files(fs: pafs.FileSystem, base: str) -> list[pafs.FileInfo]:
    """Every file under ``base`` (recursively, sorted by path); [] when ``base`` is missing."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"{to_uri(fs, base)}: cannot list ({exc})") from exc
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def fault(point: str) -> None:
    """Test hook (``STORAGE_FAULT_KILL_AT``): die here as a SIGKILL would kill the stage."""
    points = os.environ.get(FAULT_ENV)
    if points and point in points.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def delete(fs: pafs.FileSystem, path: str, is_dir: bool) -> None:
    with contextlib.suppress(FileNotFoundError):
        if is_dir:
            fs.delete_dir(path)
        else:
            fs.delete_file(path)


# ---------------------------------------------------------------- the one digest helper


def file_digest(uri: str, s3: S3Settings | None = None) -> dict[str, Any]:
    """``{"sha256": hex, "size": bytes}`` of one file (local path or ``s3://`` URI)."""
    fs, path = filesystem(uri, s3)
    return digest(fs, path)


def digest(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    """``{"sha256": hex, "size": bytes}`` of the file at ``path`` in ``fs`` (streamed)."""
    h, size = hashlib.sha256(), 0
    with fs.open_input_stream(path) as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return {"sha256": h.hexdigest(), "size": size}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (local path or ``s3://`` URI)."""
    return file_digest(str(path))["sha256"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_digest(entries: Iterable[tuple[str, str]]) -> str:
    """Digest of a folder from its ``(relative posix path, file sha256)`` entries."""
    h = hashlib.sha256(b"folder\0")
    for rel, sha in sorted(entries):
        h.update(rel.encode() + b"\0" + sha.encode() + b"\n")
    return h.hexdigest()


def digest_path(path: str | Path) -> str:
    """Content digest of a local file (its sha256) or folder (``folder_digest`` of its
    files), independent of where it lives; ``FileNotFoundError`` when missing."""
    path = Path(path)
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file())
        return folder_digest((p.relative_to(path).as_posix(), sha256_file(p)) for p in files)
    if path.is_file():
        return sha256_file(path)
    raise FileNotFoundError(str(path))


def loads(raw: bytes, uri: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc})") from exc


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


# ---------------------------------------------------------------- the one atomic write


def put_file(local: str | Path, fs: pafs.FileSystem, path: str) -> None:
    """Upload a local file to ``path`` in ``fs`` in one PUT (atomic on S3)."""
    try:
        with open(local, "rb") as src, fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, length=8 << 20)
    except OSError as exc:
        raise StorageError(f"{to_uri(fs, path)}: cannot write ({exc})") from exc


@contextlib.contextmanager
def atomic_file(uri: str, s3: S3Settings | None = None, *, tag: str | None = None) -> Iterator[str]:
    """A local temp file to fill; when the block succeeds it becomes ``uri`` in one step.

    Every single-object write goes through here. Locally the temp file sits beside the
    target (``.<name>.<tag or uuid>.tmp``) and is renamed over it; for ``s3://`` it is a
    local temp file uploaded in one PUT. The temp file is gone afterwards in every case.
    """
    fs, path = filesystem(uri, s3)
    local = isinstance(fs, pafs.LocalFileSystem)
    if local:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{tag or uuid.uuid4().hex}.tmp")
    else:
        fd, name = tempfile.mkstemp(prefix=".part-", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield str(tmp)
        if local:
            os.replace(tmp, target)
        else:
            put_file(tmp, fs, path)
    finally:
        tmp.unlink(missing_ok=True)
