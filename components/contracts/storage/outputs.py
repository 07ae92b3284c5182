"""Reading published outputs: resolve ``_SUCCESS`` to the committed version and check it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from components.contracts.settings import S3Settings
from components.contracts.storage.fs import (
    StorageError,
    filesystem,
    join,
    list_files,
    loads,
    normalize,
    sha256_bytes,
    stat,
    to_uri,
)
from components.contracts.storage.marker import (
    SUCCESS_MARKER,
    VERSION_PREFIX,
    read_marker,
    state_of,
)


def committed_state(uri: str, marker: dict[str, Any], s3: S3Settings | None) -> dict[str, Any]:
    """The version of ``uri`` that belongs to its stage's last complete commit (module doc)."""
    siblings = [u for u in marker.get("outputs", []) if u != uri]
    if not siblings:
        return state_of(marker)
    others: dict[str, dict[str, Any] | None] = {}
    for sibling in siblings:
        fs, path = filesystem(sibling, s3)
        if stat(sibling, fs, path).type == pafs.FileType.NotFound:
            continue  # moved by an orchestrator that publishes a task's outputs all or none
        other = read_marker(fs, path)
        if other is not None and uri not in other.get("outputs", []):
            continue  # rewritten since by a publication this output was not part of
        others[sibling] = other
    candidates = [state_of(marker)] + ([marker["previous"]] if marker.get("previous") else [])
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
        return to_uri(self.fs, self.path(rel))

    def has(self, rel: str) -> bool:
        return rel.strip("/") in self.files

    def read_bytes(self, rel: str | None = None) -> bytes:
        """Bytes of one listed file, checked against its recorded sha256."""
        path = self.path(rel)
        try:
            with self.fs.open_input_stream(path) as f:
                data = f.read()
        except OSError as exc:
            raise StorageError(f"{to_uri(self.fs, path)}: cannot read ({exc})") from exc
        expected = self.files[self._rel(rel)]["sha256"]
        if sha256_bytes(data) != expected:
            raise StorageError(
                f"{to_uri(self.fs, path)}: sha256 does not match {SUCCESS_MARKER} (modified)"
            )
        return data

    def read_json(self, rel: str | None = None) -> Any:
        return loads(self.read_bytes(rel), self.uri_of(rel))

    def check(self) -> None:
        """Every listed file present with its size, nothing unlisted (one listing)."""
        base = f"{self.root}/{self.version}"
        found = {i.path[len(base) :].lstrip("/"): i.size for i in list_files(self.fs, base)}
        for rel, entry in self.files.items():
            if rel not in found:
                raise StorageError(f"{to_uri(self.fs, f'{base}/{rel}')}: listed but missing")
            if found[rel] != entry["size"]:
                raise StorageError(
                    f"{to_uri(self.fs, f'{base}/{rel}')}: {found[rel]} bytes, "
                    f"{SUCCESS_MARKER} says {entry['size']} (truncated or modified)"
                )
        extra = sorted(set(found) - set(self.files))
        if extra:
            raise StorageError(
                f"{to_uri(self.fs, f'{base}/{extra[0]}')}: not listed in {SUCCESS_MARKER}"
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
    info = stat(uri, fs, path)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: no such file or folder")
    if info.type != pafs.FileType.Directory:
        raise StorageError(
            f"{uri}: a plain file, not a published output (no {SUCCESS_MARKER} marker)"
        )
    marker = read_marker(fs, path)
    if marker is None:
        raise StorageError(
            f"{uri}: folder has no {SUCCESS_MARKER} marker (incomplete, or not a stage output)"
        )
    out = Output(uri, fs, path, committed_state(uri, marker, s3))
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
        out = open_output(to_uri(fs, root), s3)
    except StorageError:
        return False
    return out.version == version and name in out.files


def resolve_data(
    uri: str, s3: S3Settings | None, require_marker: bool
) -> tuple[pafs.FileSystem, str, bool]:
    """(fs, path, is_file) of the data a table reader should open."""
    fs, path = filesystem(uri, s3)
    info = stat(uri, fs, path)
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
