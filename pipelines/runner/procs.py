"""Processes of a run: who is alive, and stopping a task's process group.

A pid alone does not identify a process across time (pids are reused), so every process
the run record names is stored with its start time (``/proc/<pid>/stat`` field 22, clock
ticks since boot) and the host it ran on; a pid whose start time differs is another
process. A task's process group is only signalled if one of its live members carries the
run's ``PIPELINE_RUN_ID`` in its environment, so a reused group id is never killed.

Liveness is ``components.contracts.process.alive`` (also used by storage and tracking);
without Linux ``/proc`` group membership cannot be checked (nothing is killed).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

from components.contracts import process
from components.contracts.process import PROC, proc_stat, start_time


def identity(pid: int | None = None) -> dict[str, object]:
    """``{pid, pgid, start, host}`` of a process (default: this one)."""
    pid = os.getpid() if pid is None else pid
    try:
        pgid = os.getpgid(pid)
    except OSError:
        pgid = 0
    return {"pid": pid, "pgid": pgid, "start": start_time(pid), "host": socket.gethostname()}


def alive(ident: dict) -> bool:
    """True when the process ``ident`` describes still runs (zombies and reused pids: False)."""
    return process.alive(int(ident.get("pid") or 0), ident.get("start"))


def _live_processes() -> Iterator[tuple[int, int]]:
    """``(pid, pgid)`` of every live, non-zombie process visible in ``/proc``."""
    if not PROC.is_dir():
        return
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                yield int(entry.name), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``."""
    return [pid for pid, group in _live_processes() if group == pgid and pgid > 0]


def has_run_id(pid: int, run_id: str) -> bool:
    """Whether process ``pid`` was started with ``PIPELINE_RUN_ID=<run_id>``."""
    try:
        env = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"PIPELINE_RUN_ID={run_id}".encode() in env


def run_groups(run_id: str) -> set[int]:
    """Process groups (other than this process's) with a live member started with
    ``PIPELINE_RUN_ID=<run_id>``: tasks of the run, recorded or not."""
    own = os.getpgid(0)
    return {group for pid, group in _live_processes() if group != own and has_run_id(pid, run_id)}


def run_group_members(pgid: int, run_id: str) -> list[int]:
    """Live members of ``pgid`` if the group belongs to run ``run_id``, else ``[]``."""
    members = group_members(pgid)
    return members if any(has_run_id(pid, run_id) for pid in members) else []


def stop_group(pgid: int, run_id: str, grace_s: float = 5.0) -> list[int]:
    """SIGTERM the task process group ``pgid`` of run ``run_id``; SIGKILL it after ``grace_s``.

    Returns:
        The pids that were alive in the group (empty: nothing of the run was there).
    """
    members = run_group_members(pgid, run_id)
    if not members:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not group_members(pgid):
            break
    return members
