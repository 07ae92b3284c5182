"""The ``_SUCCESS`` marker: its format, commit ids and the staging ownership rule.

The rule itself is in the package docstring (``components.contracts.storage``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from components.contracts.process import alive
from components.contracts.settings import S3Settings
from components.contracts.storage.fs import (
    StorageError,
    delete,
    filesystem,
    loads,
    normalize,
    stat,
    to_uri,
)

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
MARKER_FORMAT = "cashier-integrity-output"
MARKER_VERSION = 1
VERSION_PREFIX = "v-"
STAGING_GRACE_S = 6 * 3600
"""Age after which an unreferenced version of another host's writer counts as abandoned."""
_COMMIT_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})-(\d+)-([0-9a-f]{8})$")


def read_marker(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
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
        raise StorageError(f"{to_uri(fs, marker_path)}: cannot read ({exc})") from exc
    marker = loads(raw, to_uri(fs, marker_path))
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        raise StorageError(
            f"{to_uri(fs, marker_path)}: not a {MARKER_FORMAT} marker (written by an older "
            "version or by hand); re-run the stage that produces it"
        )
    if marker.get("format_version") != MARKER_VERSION:
        raise StorageError(
            f"{to_uri(fs, marker_path)}: marker format_version {marker.get('format_version')!r} "
            f"is not {MARKER_VERSION}"
        )
    return marker


def make_marker(
    *,
    stage: str,
    commit: str,
    kind: str,
    name: str | None,
    files: dict[str, dict[str, Any]],
    meta: dict[str, Any],
    outputs: list[str],
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``_SUCCESS`` document of one output of commit ``commit`` (the one marker format)."""
    return {
        "format": MARKER_FORMAT,
        "format_version": MARKER_VERSION,
        "stage": stage,
        "commit": commit,
        "version": f"{VERSION_PREFIX}{commit}",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kind": kind,
        **({"name": name} if kind == "file" else {}),
        "files": files,
        "meta": meta,
        "outputs": outputs,
        "previous": previous,
    }


def state_of(marker: dict[str, Any]) -> dict[str, Any]:
    """A marker's current version (without its ``previous``)."""
    return {k: v for k, v in marker.items() if k != "previous"}


HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def new_commit_id() -> str:
    """``<UTC time>-<host tag>-<pid>-<random>``: sortable, and names its writer."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{HOST_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def abandoned(commit: str, now: float | None = None) -> bool:
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
    return m.group(2) == HOST_TAG and (pid == os.getpid() or not alive(pid))


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
        if stat(uri, fs, path).type == pafs.FileType.Directory:
            marker = read_marker(fs, path)
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
        if abandoned(commit):
            delete(fs, info.path, info.type == pafs.FileType.Directory)
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


def is_ours(name: str) -> bool:
    """Names the publishing rule creates inside an output folder."""
    return (
        name == SUCCESS_MARKER
        or name.startswith(VERSION_PREFIX)
        or name.startswith(f".{SUCCESS_MARKER}.")
    )


def legacy_layout(fs: pafs.FileSystem, path: str) -> bool:
    """True when an output folder holds files of the pre-versioned layout (no/foreign marker)."""
    try:
        if read_marker(fs, path) is not None:
            return False
    except StorageError:
        return True
    entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(not is_ours(i.base_name) for i in entries)
