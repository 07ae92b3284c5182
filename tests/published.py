"""Test helper: turn hand-made stage outputs into published ones (``storage.publish``).

Stages refuse inputs without their ``_SUCCESS`` marker, so a test that builds an input by
hand publishes it before handing it to a stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from components.contracts import storage


def publish_in_place(path: str | Path) -> Path:
    """Publish the file or folder at ``path`` as the output ``path``; returns ``path``."""
    path = Path(path)
    src = path.with_name(f"{path.name}.src")
    path.rename(src)
    if src.is_dir():
        storage.publish_dir(src, str(path))
        shutil.rmtree(src)
    else:
        storage.publish_file(src, str(path))
        src.unlink()
    return path
