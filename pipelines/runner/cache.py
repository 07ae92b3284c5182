"""Content-addressed task cache.

A task's cache key is the sha256 of:

* the component digest: its ComponentSpec and executor spec as canonical JSON, without the
  image (locally the image is not what runs; the code is, see next item);
* the code digest: the Python sources of the module the command runs (``python -m X``) and
  of the shared contracts package, so editing a stage's code busts its cache;
* the resolved input parameter values;
* the digests of the input artifacts' CONTENTS (``storage.digest_path``: a file's sha256; a
  folder's sorted ``(relative path, file sha256)`` list, hashed), never their URIs;
* for a task that talks to MLflow (its sources or the contracts they import use ``mlflow``)
  or whose code cannot be located: the settings that change what it writes outside its
  outputs (``Settings.result_settings()``: tracking URI, artifact location, experiment,
  model name, alias, S3 endpoint), resolved from the task's environment.

An entry is written only after the task succeeded and its outputs were completely written
(and uploaded, for an S3 root), so a killed task never leaves a trusted entry; a hit is
trusted only if every recorded output still has the recorded content: locally its digest
is recomputed, on S3 every object's ETag (listed at put time) is compared, so an
overwritten, added or deleted object invalidates the entry. Tasks whose caching is off in
the YAML never reach this module (see ``engine``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from components.contracts import storage
from components.contracts.settings import DEFAULT_SERVICE_TIMEOUT_S

log = logging.getLogger(__name__)

CACHE_FORMAT = 2


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def component_digest(component_spec, container=None) -> str:
    """Digest of a component's interface and command (image excluded, see module doc)."""
    spec = json_format.MessageToDict(component_spec)
    exe: dict[str, Any] = {}
    if container is not None:
        exe = json_format.MessageToDict(container)
        exe.pop("image", None)
    return storage.sha256_bytes(canonical_json({"component": spec, "executor": exe}))


def _module_of(command: Sequence[str]) -> str | None:
    for i, part in enumerate(command[:-1]):
        if part == "-m":
            return command[i + 1]
    return None


def _source_files(module: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return []
    origin = Path(spec.origin)
    if spec.submodule_search_locations or origin.name in ("__init__.py", "__main__.py"):
        root = origin.parent
        return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return [origin]


@functools.lru_cache(maxsize=1024)
def _parsed_imports(path: str, mtime_ns: int, size: int) -> frozenset[str] | None:
    try:
        tree = ast.parse(Path(path).read_text(), path)
    except (OSError, SyntaxError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return frozenset(names)


def _imports(file: Path) -> frozenset[str] | None:
    """Absolute module names a source file imports (``from a import b`` gives ``a`` and
    ``a.b``), found statically; None when unreadable. Memoised by path, mtime and size."""
    try:
        st = file.stat()
    except OSError:
        return None
    return _parsed_imports(str(file), st.st_mtime_ns, st.st_size)


def _imported_contracts(files: Sequence[Path]) -> set[str]:
    """``components.contracts.<x>`` modules the given sources import (statically)."""
    found: set[str] = set()
    for file in files:
        for name in _imports(file) or ():
            parts = name.split(".")
            if parts[:2] == ["components", "contracts"] and len(parts) >= 3:
                found.add(".".join(parts[:3]))
    return found


def _contracts_closure(files: Sequence[Path]) -> list[Path]:
    """Source files of the shared contracts the given files use, transitively."""
    seen: set[str] = set()
    todo = _imported_contracts(files)
    out: list[Path] = []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        sources = _source_files(module)
        out += sources
        todo |= _imported_contracts(sources) - seen
    return out


def _imports_mlflow(file: Path) -> bool:
    names = _imports(file)
    if names is None:
        return True  # unreadable: assume the worst
    return any(name.split(".")[0] == "mlflow" for name in names)


def uses_settings(command: Sequence[str]) -> bool:
    """Whether a task's result depends on ``Settings.result_settings()`` (see module doc).

    True when the ``python -m X`` module or a contracts module it imports imports ``mlflow``
    (found statically, without importing), and when the code cannot be located (``python
    -c``, another interpreter): a spurious miss costs a rerun, a wrong hit a lost side effect.
    """
    module = _module_of(command)
    files = _source_files(module) if module else []
    if not files:
        return True
    return any(_imports_mlflow(f) for f in files + _contracts_closure(files))


def code_digest(command: Sequence[str]) -> str:
    """Digest of the Python sources a ``python -m X`` command runs (empty-safe).

    For ``components.<stage>`` the shared ``components.contracts`` modules it imports
    (transitively, found statically) count too, so editing ``contracts/blend.py`` does not
    bust ``datagen``. Sources are located without importing them.
    """
    module = _module_of(command)
    if not module:
        return ""
    files = _source_files(module)
    files += _contracts_closure(files)
    h = hashlib.sha256()
    for file in sorted(set(files)):
        h.update(file.name.encode() + b"\0" + storage.sha256_file(file).encode() + b"\n")
    return h.hexdigest()


def cache_key(
    component: str,
    code: str,
    parameters: Mapping[str, Any],
    input_digests: Mapping[str, str],
    environment: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of one task execution (see module doc)."""
    payload = {
        "format": CACHE_FORMAT,
        "component": component,
        "code": code,
        "parameters": dict(parameters),
        "inputs": dict(input_digests),
        "environment": dict(environment or {}),
    }
    return storage.sha256_bytes(canonical_json(payload))


def s3_etags(client, uri: str) -> dict[str, str]:
    """ETag of every object an ``s3://`` output consists of, by path relative to ``uri``.

    A file output is the object ``uri`` itself (relative path ``""``); a folder output is
    every object under ``uri/``. Both are listed, so an object added next to or under the
    output changes the result too.
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    key = key.rstrip("/")
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents", []):
            name = obj["Key"]
            if name == key:
                found[""] = obj["ETag"]
            elif name.startswith(key + "/"):
                found[name[len(key) + 1 :]] = obj["ETag"]
    return found


class CacheStore:
    """Cache entries as JSON files under ``<pipeline_root>/.cache/`` (local or S3)."""

    def __init__(self, pipeline_root: str, s3=None):
        self.root = storage.join(pipeline_root, ".cache")
        self.s3 = s3
        self._client = None

    def _s3_client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            s3 = self.s3
            attempts, per_attempt_s = storage.s3_budget(
                s3.service_timeout_s if s3 else DEFAULT_SERVICE_TIMEOUT_S
            )
            self._client = boto3.client(
                "s3",
                config=Config(  # bounded like storage's own S3 calls
                    connect_timeout=per_attempt_s,
                    read_timeout=per_attempt_s,
                    retries={"mode": "standard", "total_max_attempts": attempts},
                ),
                endpoint_url=s3.endpoint_url if s3 else None,
                region_name=s3.region if s3 else None,
                aws_access_key_id=s3.access_key_id if s3 else None,
                aws_secret_access_key=s3.secret_access_key if s3 else None,
                aws_session_token=s3.session_token if s3 else None,
            )
        return self._client

    def _uri(self, key: str) -> str:
        return storage.join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> dict[str, Any] | None:
        uri = self._uri(key)
        try:
            if not storage.exists(uri, self.s3):
                return None
            entry = storage.read_json(uri, self.s3)
        except (storage.StorageError, OSError) as exc:
            log.warning("ignoring unreadable cache entry %s: %s", uri, exc)
            return None
        if entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
            return None
        return entry

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Write an entry; ``s3://`` outputs get the ETags of their objects as of now."""
        outputs = {}
        for name, out in entry.get("outputs", {}).items():
            if storage.is_s3(out["uri"]):
                etags = s3_etags(self._s3_client(), out["uri"])
                if not etags:
                    raise storage.StorageError(f"cache: output {out['uri']} has no objects")
                out = {**out, "etags": etags}
            outputs[name] = out
        storage.write_json(
            {**entry, "outputs": outputs, "format": CACHE_FORMAT, "key": key},
            self._uri(key),
            self.s3,
        )

    def outputs_valid(self, entry: Mapping[str, Any]) -> bool:
        """True when every recorded output still has the recorded content (module doc)."""
        for out in entry.get("outputs", {}).values():
            uri = out["uri"]
            if storage.is_s3(uri):
                try:
                    now = s3_etags(self._s3_client(), uri)
                except Exception as exc:  # any S3/credential error: do not trust the entry
                    log.warning("cannot list cached output %s (%s); not trusting it", uri, exc)
                    return False
                if not out.get("etags") or now != out["etags"]:
                    log.warning("cached output %s changed on S3; not trusting it", uri)
                    return False
                continue
            try:
                if storage.digest_path(uri) != out["digest"]:
                    log.warning("cached output %s changed on disk; not trusting it", uri)
                    return False
            except FileNotFoundError:
                return False
        return True
