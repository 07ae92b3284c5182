"""Run records: one JSON file per pipeline run (tasks, cache, timings, lineage, metrics).

Stored at ``<VAR_DIR>/runs/<run_id>.json``, rewritten atomically after every task state
change so an interrupted run can be inspected and resumed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.contracts import storage

RECORD_FORMAT = 1

# Task states. "succeeded" covers both a fresh execution and a cache hit (see ``cache``).
PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED, NOT_RUN = (
    "pending", "running", "succeeded", "failed", "skipped", "not_run",
)  # fmt: skip
# Run states.
RUN_RUNNING, RUN_SUCCEEDED, RUN_FAILED, RUN_INTERRUPTED = (
    "running", "succeeded", "failed", "interrupted",
)  # fmt: skip


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def new_run_id(pipeline_name: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline_name}-{stamp}-{secrets.token_hex(2)}"


@dataclass
class TaskRecord:
    """What happened to one task in one run."""

    name: str
    status: str = PENDING
    cache: str = ""
    """``hit``, ``miss``, ``disabled`` (forced: no cache read, result stored), ``off`` (caching
    off in the YAML, e.g. side effects: never read nor stored), ``import``, or empty."""
    cache_key: str = ""
    cached_from: str = ""
    """For a cache hit: the run whose execution produced the result."""
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0
    attempts: int = 0
    exit_code: int | None = None
    error: str = ""
    log: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Input artifact name -> {uri, digest, producer}."""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Output artifact name -> {uri, digest, type, metadata}."""
    output_parameters: dict[str, Any] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)
    """The live attempt's process ``{pid, pgid, start, host}`` (its own process group);
    cleared when the attempt ends, so a non-empty value after the runner died names what
    may still run."""


@dataclass
class RunRecord:
    """One pipeline run."""

    run_id: str
    pipeline_name: str
    pipeline_file: str
    pipeline_sha256: str
    pipeline_root: str
    parameters: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    status: str = RUN_RUNNING
    started_at: str = field(default_factory=now_iso)
    finished_at: str = ""
    duration_s: float = 0.0
    error: str = ""
    resumed: int = 0
    """How many times ``--resume`` continued this run."""
    runner: dict[str, Any] = field(default_factory=dict)
    """The runner process executing the run now or last: ``{pid, pgid, start, host}``."""
    resumes: list[dict[str, Any]] = field(default_factory=list)
    """What each ``--resume`` found: old runner state, task groups killed, tasks redone."""
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    format: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"unsupported run record format {data.get('format')!r}")
        tasks = {name: TaskRecord(**t) for name, t in data.pop("tasks", {}).items()}
        return cls(**data, tasks=tasks)

    @property
    def cache_hits(self) -> int:
        return sum(1 for t in self.tasks.values() if t.cache == "hit")


def runs_dir(var_dir: str | Path) -> Path:
    return Path(var_dir) / "runs"


def record_path(var_dir: str | Path, run_id: str) -> Path:
    return runs_dir(var_dir) / f"{run_id}.json"


def save(record: RunRecord, var_dir: str | Path) -> Path:
    path = record_path(var_dir, record.run_id)
    storage.write_json(record.to_dict(), str(path))
    return path


def load(var_dir: str | Path, run_id: str) -> RunRecord:
    """Load a run record by id (a unique prefix is enough).

    Raises:
        FileNotFoundError: No run (or more than one) matches.
    """
    folder = runs_dir(var_dir)
    exact = record_path(var_dir, run_id)
    if exact.exists():
        return RunRecord.from_dict(storage.read_json(str(exact)))
    matches = sorted(folder.glob(f"{run_id}*.json")) if folder.exists() else []
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise FileNotFoundError(f"{found} with id '{run_id}' in {folder}")
    return RunRecord.from_dict(storage.read_json(str(matches[0])))


def list_runs(var_dir: str | Path) -> list[RunRecord]:
    """All readable run records, newest first."""
    folder = runs_dir(var_dir)
    records = []
    for path in folder.glob("*.json") if folder.exists() else []:
        try:
            records.append(RunRecord.from_dict(storage.read_json(str(path))))
        except (ValueError, TypeError, storage.StorageError):
            continue
    return sorted(records, key=lambda r: r.started_at, reverse=True)
