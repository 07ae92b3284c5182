"""Output plumbing shared by the training stages: atomic model folders and MLflow guarding.

``staged_model_dir`` builds a model folder in a staging folder and publishes it only when the
block succeeds, so a killed or failed run never leaves a folder that looks complete:

* local target: staging folder ``.<name>.tmp-<uuid>`` beside the target, renamed into place
  (an existing target is moved aside first and removed after the swap);
* ``s3://`` target: staging in a local temp folder, the prefix cleared, the files uploaded,
  ``_SUCCESS`` written last.

Either way the published folder holds ``_SUCCESS`` = JSON ``{"files": {relpath: sha256}}``,
so ``storage.is_complete_dataset(uri)`` is true only for a finished folder.
(Candidate to move into ``storage.py``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from components.contracts import storage

logger = logging.getLogger(__name__)


class MlflowLoggingError(RuntimeError):
    """Logging to MLflow failed; the stage fails rather than silently losing its run."""


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative POSIX path -> hex digest)."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name == storage.SUCCESS_MARKER:
            continue
        out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _write_marker(folder: Path) -> None:
    marker = {"files": file_digests(folder)}
    (folder / storage.SUCCESS_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))


@contextlib.contextmanager
def staged_model_dir(out_uri: str) -> Iterator[Path]:
    """Yield a local folder to fill; publish it atomically to ``out_uri`` if the block succeeds.

    Args:
        out_uri: Target folder: local path or ``s3://`` URI.
    """
    out_uri = str(out_uri)
    if storage.is_s3(out_uri):
        staging = Path(tempfile.mkdtemp(prefix="model-"))
    else:
        target = Path(out_uri).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
        staging.mkdir()
    try:
        yield staging
        _write_marker(staging)
        if storage.is_s3(out_uri):
            fs, path = storage.filesystem(out_uri)
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(f"{path}/{storage.SUCCESS_MARKER}")
            fs.delete_dir_contents(path, missing_dir_ok=True)
            storage.upload_dir(staging, out_uri)
        else:
            if target.exists():
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
                target.rename(old)
                staging.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(target)
        logger.info("published model folder %s", out_uri)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def mlflow_guard(what: str, tracking_uri: str) -> Iterator[None]:
    """Turn any failure inside the block into ``MlflowLoggingError`` naming the store."""
    try:
        yield
    except MlflowLoggingError:
        raise
    except Exception as exc:
        raise MlflowLoggingError(
            f"MLflow {what} failed (tracking URI {tracking_uri}): {type(exc).__name__}: {exc}"
        ) from exc
