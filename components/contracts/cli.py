"""Small helpers every stage CLI shares: logging set-up and the one-line error contract."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from components.contracts.schemas import SchemaError
from components.contracts.storage import StorageError

USER_ERRORS = (SchemaError, StorageError, ValueError, KeyError, FileNotFoundError)
"""Errors caused by the input or parameters: reported in one line, exit code 2."""


def run(stage: str, main: Callable[[], object]) -> int:
    """Run a stage's ``main`` with logging set up; turn input errors into one line + exit 2."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage} %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        main()
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{stage}: error: {message}", file=sys.stderr)
        return 2
    logging.getLogger(stage).info("done in %.1fs", time.perf_counter() - started)
    return 0
