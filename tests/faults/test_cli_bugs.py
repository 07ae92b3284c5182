"""Bugs keep their traceback; bad flags are one line. Only names that existed before this
suite are imported, so the same file shows the old behaviour when run against it."""

from __future__ import annotations

import pytest

from components.contracts import cli


def _raise(exc: BaseException):
    def main():
        raise exc

    return main


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug: not an input check"),
        KeyError("missing_key"),
        TypeError("unsupported operand"),
        ZeroDivisionError("division by zero"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_keep_their_traceback(exc):
    """Before: every ValueError/KeyError was 'user error', exit 2, traceback hidden."""
    with pytest.raises(type(exc)):
        cli.run("stage", _raise(exc))


@pytest.mark.parametrize(
    ("module", "stage"),
    [
        ("datagen", "datagen"),
        ("split", "split"),
        ("features", "features"),
        ("train_xgb", "train-xgb"),
        ("train_iforest", "train-iforest"),
        ("evaluate", "evaluate"),
        ("register", "register"),
    ],
)
def test_bad_flags_are_one_line(module, stage, capsys):
    """Before: argparse printed its usage block too (two or more lines) in five stages."""
    import importlib

    mod = importlib.import_module(f"components.{module}.__main__")
    parse = getattr(mod, "parse_args", None) or (lambda argv: mod.build_parser().parse_args(argv))
    with pytest.raises(SystemExit) as exit_info:
        parse(["--no-such-flag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{stage}: error: "), err
