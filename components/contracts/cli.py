"""Small helpers every stage CLI shares: logging set-up and the one-line error contract.

Exit codes of every stage CLI:

* 0: done;
* 2: user error: bad input data, a bad parameter, a missing or corrupt input file. The
  exception types the code raises on purpose for those are listed in ``user_error``;
* 1: environment error: a service (S3, the MLflow server, its database) cannot be reached
  or failed (``environment_error``);
* 143 / 130: stopped by SIGTERM / Ctrl-C (``Terminated`` / ``KeyboardInterrupt``); the
  stage's MLflow run is ended as KILLED (``tracking.stage_run``);
* anything else is a bug and keeps its traceback (exit 1).

Errors of the first three kinds are reported in one line: ``<stage>: error: <message>``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from components.contracts.schemas import InputError, ServiceError
from components.contracts.storage import StorageError

if TYPE_CHECKING:
    from components.contracts.spec import StageSpec

USER_ERRORS: tuple[type[BaseException], ...] = (
    # SchemaError, BundleError, BlendError, ForestFormatError, TrainingDataError and every
    # stage's own input checks derive from it (so the runner's code digest of a stage does
    # not pull in every contract module through this one).
    InputError,
)
"""Exception types raised on purpose for bad input or parameters: one line, exit 2."""

USER_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)
"""OS errors that mean the user named a wrong path (anything else from the OS, pyarrow's
S3 filesystem included, is the environment)."""

MLFLOW_ENVIRONMENT_CODES = frozenset(
    {
        "INTERNAL_ERROR",  # MLflow's code for "API request to ... failed" (connection errors)
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "ENDPOINT_NOT_FOUND",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "CUSTOMER_UNAUTHORIZED",
        "IO_ERROR",
    }
)
"""``MlflowException.error_code`` values that mean the server or store failed, not our call."""

EXIT_USER, EXIT_ENVIRONMENT, EXIT_SIGTERM, EXIT_SIGINT = 2, 1, 143, 130


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (see ``sigterm_raises``).

    A BaseException, so ``except Exception`` blocks do not swallow it and context managers
    (MLflow runs, staged outputs) unwind and clean up as for Ctrl-C.
    """


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with the one-line error contract: ``<stage>: error: <message>``, exit 2
    (argparse's own ``error`` prints the usage block too)."""

    def __init__(self, *args, stage: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stage = stage

    def error(self, message: str):
        print(f"{self.stage}: error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(EXIT_USER)


def truthy(value: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no; any case) as KFP renders a boolean parameter."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser(
    spec: StageSpec,
    description: str = "",
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> ArgumentParser:
    """The stage CLI's parser, derived from its spec (flags, types, defaults, help).

    ``extra`` adds flags the spec does not own (``tracking.add_pipeline_run_id_arg`` for the
    stages that log to MLflow; passed in, so a stage that does not stays free of mlflow).
    """
    p = ArgumentParser(
        stage=spec.name,
        prog=f"python -m components.{spec.module}",
        description=" ".join(filter(None, (spec.summary, description))),
    )
    io = p.add_argument_group("inputs and outputs (local paths or s3:// URIs)")
    for direction, items in (("in", spec.inputs), ("out", spec.outputs)):
        for item in items:
            flag = f"--{direction}-{item.name.replace('_', '-')}"
            io.add_argument(flag, required=item.required, help=f"{item.kind}: {item.help}")
    params = p.add_argument_group("parameters")
    for param in spec.params:
        kwargs: dict = {"default": param.default, "help": _help(param)}
        if param.type is bool:
            kwargs.update(nargs="?", const=True, type=truthy, metavar="true|false")
        else:
            kwargs.update(type=param.type, choices=param.choices)
        params.add_argument(param.flag, **kwargs)
    if spec.executor_input:
        io.add_argument("--executor-input", help="KFP executor input JSON ({{$}}); optional")
        io.add_argument(
            "--executor-output",
            help="executor output path for stand-alone use (default: outputs.outputFile of "
            "--executor-input, where the KFP launcher reads it)",
        )
    if extra is not None:
        extra(p)
    return p


def dataclass_kwargs(args: argparse.Namespace, cls: type) -> dict:
    """The parsed values of ``args`` named like fields of the dataclass ``cls``: a stage's
    logic parameters built from its CLI without naming every flag again."""
    import dataclasses

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def _help(param) -> str:
    text = param.help.replace("%", "%%")
    return text if param.default is None else f"{text} (default {param.default})"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_environment_os_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, USER_OS_ERRORS)


def user_error(exc: BaseException) -> bool:
    """True for the error types raised on purpose for bad input (exit 2)."""
    if isinstance(exc, StorageError):  # a missing/corrupt input, unless the network failed
        return not any(_is_environment_os_error(c) for c in list(_chain(exc))[1:])
    return isinstance(exc, USER_ERRORS + USER_OS_ERRORS)


def environment_error(exc: BaseException) -> bool:
    """True when a service or the machine failed (exit 1): S3, MLflow, disk."""
    if isinstance(exc, ServiceError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError):
        return _is_environment_os_error(exc) or any(
            _is_environment_os_error(c) for c in list(_chain(exc))[1:]
        )
    # Looked up, not imported: an MlflowException can only exist once mlflow is loaded, and
    # a stage that never imports mlflow keeps its cache key free of the MLflow settings.
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    if mlflow_exceptions is not None and isinstance(exc, mlflow_exceptions.MlflowException):
        return exc.error_code in MLFLOW_ENVIRONMENT_CODES or any(
            isinstance(c, OSError) for c in _chain(exc)
        )
    return False


def one_line(exc: BaseException, limit: int = 600) -> str:
    """The exception's message on one line (KeyError's quotes dropped), at most ``limit``."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(message).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` in the main thread for the duration of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(stage: str, main: Callable[[], object]) -> int:
    """Run a stage's ``main`` with logging set up; map failures to one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage} %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        with sigterm_raises():
            main()
    except Terminated as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print(f"{stage}: error: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Exception as exc:
        if user_error(exc):
            code = EXIT_USER
        elif environment_error(exc):
            code = EXIT_ENVIRONMENT
        else:
            raise  # a bug: keep the traceback
        print(f"{stage}: error: {one_line(exc)}", file=sys.stderr)
        return code
    logging.getLogger(stage).info("done in %.1fs", time.perf_counter() - started)
    return 0
