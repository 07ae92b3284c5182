"""Is a process still running? The one liveness check (storage, tracking and the runner).

A pid alone does not name a process across time (pids are reused), so a caller that
recorded the process's start time (``/proc/<pid>/stat`` field 22, clock ticks since boot;
``start_time``) passes it, and a live pid with another start time counts as gone. Zombies
count as gone. Without ``/proc`` (not Linux) liveness falls back to ``kill(pid, 0)``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0]); None if gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" when it cannot be read)."""
    fields = proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def alive(pid: int, start: str | None = None) -> bool:
    """True when process ``pid`` runs (and, given ``start``, is the one that started then)."""
    if pid <= 0:
        return False
    if PROC.is_dir():
        fields = proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return not start or start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
