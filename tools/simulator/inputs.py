"""Simulator inputs: the live stream (JSON Lines), its held-out labels, the latest run's files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tools.simulator.logic import SimulatorError

# ---------------------------------------------------------------- inputs


def _jsonable(row: dict) -> dict:
    return {
        k: (v.isoformat() if isinstance(v, dt.datetime | dt.date) else v) for k, v in row.items()
    }


def load_stream(uri: str, limit: int | None = None) -> list[dict]:
    """Read the live stream (JSON Lines, validated against RAW_TRANSACTION) as request bodies."""
    from components.contracts import storage
    from components.contracts.schemas import RAW_TRANSACTION

    table = storage.read_jsonl(uri, RAW_TRANSACTION, require_marker=False)  # any JSONL file
    if limit is not None:
        table = table.slice(0, limit)
    return [_jsonable(row) for row in table.to_pylist()]


def load_labels(uri: str) -> dict[str, tuple[bool, str]]:
    """Read the held-out live labels (LIVE_LABELS Parquet) keyed by transaction id."""
    from components.contracts import storage
    from components.contracts.schemas import LIVE_LABELS

    table = storage.read_table(uri, LIVE_LABELS, require_marker=False)
    return {
        tid: (bool(fraud), str(ftype))
        for tid, fraud, ftype in zip(
            table.column("transaction_id").to_pylist(),
            table.column("is_fraud").to_pylist(),
            table.column("fraud_type").to_pylist(),
            strict=True,
        )
    }


def find_latest(root: Path, pattern: str, suffixes: tuple[str, ...] = ("",)) -> Path | None:
    """Newest file (by modification time) under ``root`` matching ``pattern`` and a suffix."""
    if not root.exists():
        return None
    candidates = [p for p in root.rglob(pattern) if p.is_file() and p.suffix in suffixes]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def latest_live_files(root: Path) -> tuple[Path, Path | None]:
    """The newest live stream under ``root`` and the live labels written next to it.

    Matches both the split CLI's own names (``live_stream.jsonl``, ``live_labels.parquet``)
    and the local runner's artifact files (``.../split/live_stream``, no extension). The
    labels are searched in the stream's own run first (the nearest ancestor folder, up to
    three levels up, that holds one), so stream and labels come from the same split run.
    """
    stream = find_latest(root, "*live*stream*", ("", ".jsonl"))
    if stream is None:
        raise SimulatorError(
            f"{root}: no live stream (*live*stream*[.jsonl]) found; run the pipeline first"
        )
    folder = stream.parent
    for _ in range(4):
        labels = find_latest(folder, "*live*labels*", ("", ".parquet"))
        if labels is not None:
            return stream, labels
        if folder == root or folder.parent == folder:
            break
        folder = folder.parent
    return stream, None
