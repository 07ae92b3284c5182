"""The stage CLI contract (``components.contracts.cli.run``): which failures are the user's
(exit 2), the environment's (exit 1), a stop (143) or a bug (traceback kept)."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from components.contracts import cli
from components.contracts.bundle import BundleError
from components.contracts.forest import ForestFormatError
from components.contracts.schemas import InputError, SchemaError
from components.contracts.storage import StorageError
from components.contracts.training import MlflowLoggingError, TrainingDataError


def _raise(exc: BaseException):
    def main():
        raise exc

    return main


def _storage_error_from(cause: BaseException) -> StorageError:
    try:
        raise cause
    except BaseException as inner:
        try:
            raise StorageError(f"s3://b/k: cannot read ({inner})") from inner
        except StorageError as outer:
            return outer


def _mlflow_error(code: str, cause: BaseException | None = None):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    code = getattr(databricks_pb2, code)
    try:
        if cause is None:
            raise MlflowException("boom", error_code=code)
        try:
            raise cause
        except BaseException:
            raise MlflowException("API request to http://127.0.0.1:9 failed", error_code=code)  # noqa: B904
    except MlflowException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InputError("f.parquet: bad"), 2),
        (SchemaError("f.parquet: column 'x' has 3 null value(s)"), 2),
        (TrainingDataError("f.parquet: column 'y' has 2 row(s) NaN"), 2),
        (BundleError("b/xgb.ubj: sha256 mismatch"), 2),
        (ForestFormatError("forest.npz: not a readable .npz file"), 2),
        (StorageError("x.parquet: no such file"), 2),
        (FileNotFoundError(errno.ENOENT, "No such file", "x"), 2),
        (_storage_error_from(OSError("AWS Error NETWORK_CONNECTION")), 1),
        (_storage_error_from(FileNotFoundError("gone")), 2),
        (OSError("When reading key: AWS Error NETWORK_CONNECTION"), 1),
        (OSError(errno.ENOSPC, "No space left on device"), 1),
        (ConnectionRefusedError("refused"), 1),
        (MlflowLoggingError("MLflow logging failed"), 1),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_exit_codes(exc, code, capsys):
    assert cli.run("stage", _raise(exc)) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stage: error: ")


def test_mlflow_unreachable_is_environment(capsys):
    import requests

    exc = _mlflow_error("INTERNAL_ERROR", requests.exceptions.ConnectionError("refused"))
    assert cli.run("stage", _raise(exc)) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_mlflow_misuse_is_a_bug():
    exc = _mlflow_error("INVALID_PARAMETER_VALUE")
    with pytest.raises(type(exc)):
        cli.run("stage", _raise(exc))


def test_sigterm_is_one_line_and_143(capsys):
    def main():
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached: SIGTERM raises Terminated")

    assert cli.run("stage", main) == 143
    assert "SIGTERM" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_one_line_flattens_messages():
    assert cli.one_line(InputError("a\n  b\tc")) == "a b c"
    assert cli.one_line(KeyError("k")) == "k"
    assert len(cli.one_line(InputError("x" * 5000))) == 600
