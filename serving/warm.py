"""Compile every serving kernel into numba's cache ahead of time (an image build step).

    NUMBA_CACHE_DIR=/opt/numba-seed MODEL_DIR=serving/model python -m serving.warm

Loads the bundle exactly as the app does (sha256 verification, tree compilation, the
single-row and batch self-test), which compiles every kernel a request can reach and writes
it to ``NUMBA_CACHE_DIR``. The images ship that folder read-only and name it
``NUMBA_CACHE_SEED``; the entry points' ``serving.prepare_numba_cache`` copies it into the
writable cache at start, so a cold start loads machine code instead of compiling it. Run it with the same
``NUMBA_CPU_NAME`` the image runs with, or the cache entries will not match.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from serving.model_loader import ModelLoadError, load
from serving.settings import ServingSettings


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m serving.warm", description=__doc__.split("\n\n")[0]
    ).parse_args(argv)
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        print("serving.warm: error: set NUMBA_CACHE_DIR to the folder to fill", file=sys.stderr)
        return 2
    try:
        loaded = load(ServingSettings.from_env())
    except ModelLoadError as exc:
        print(f"serving.warm: error: {exc}", file=sys.stderr)
        return 2
    files = sum(1 for p in Path(cache).rglob("*") if p.is_file())
    cpu = os.environ.get("NUMBA_CPU_NAME", "host")
    print(
        f"serving.warm: {files} cached kernel files for CPU {cpu} in {cache} "
        f"(model {loaded.name} {loaded.version}, {loaded.load_seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
