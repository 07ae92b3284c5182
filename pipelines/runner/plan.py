"""What a run does before it starts: its options and each task's mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.runner import ir

# Task modes decided before the run starts.
RUN, FORCE, CACHE_ONLY, SKIP, DONE = "run", "force", "cache-only", "skip", "done"


@dataclass
class RunOptions:
    """How to run a pipeline (CLI flags of ``python -m pipelines run``)."""

    params: dict[str, Any] = field(default_factory=dict)
    """Pipeline parameter overrides (strings are parsed by the declared type)."""
    pipeline_root: str | None = None
    """Overrides ``Settings.pipeline_root`` (a folder or ``s3://bucket/prefix``)."""
    parallelism: int = 2
    """How many independent tasks run at once."""
    no_cache: bool = False
    """Do not read the cache (results are still written to it)."""
    rerun_from: str | None = None
    """Run this task and everything downstream; upstream must come from the cache."""
    only: str | None = None
    """Run only this task; its upstream must come from the cache, downstream is skipped."""
    task_timeout: float | None = None
    """Seconds before a task attempt is killed (None: the YAML's setting or no limit)."""
    resume: str | None = None
    """Continue this failed or interrupted run id."""


def plan_modes(
    deps: Mapping[str, tuple[str, ...]],
    *,
    rerun_from: str | None = None,
    only: str | None = None,
    no_cache: bool = False,
    cache_disabled: set[str] | frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Decide per task: ``run`` (cache, else execute), ``force`` (execute),
    ``cache-only`` (must be a cache hit) or ``skip``.

    A task in ``cache_disabled`` (caching off in the YAML: side effects) always executes;
    it can never be ``cache-only``.

    Raises:
        PipelineError: ``rerun_from`` / ``only`` name no task, both are given, or they need
            a cache-disabled task's result from the cache.
    """
    for flag, name in (("--rerun-from", rerun_from), ("--only", only)):
        if name is not None and name not in deps:
            raise ir.PipelineError(
                f"{flag} {name}: no such task (tasks: {', '.join(sorted(deps))})"
            )
    if rerun_from and only:
        raise ir.PipelineError("--rerun-from and --only cannot be combined")
    modes = {name: FORCE if no_cache or name in cache_disabled else RUN for name in deps}
    if rerun_from:
        forced = ir.downstream(deps, rerun_from)
        for name in deps:
            modes[name] = FORCE if name in forced else CACHE_ONLY
    if only:
        before = ir.upstream(deps, only)
        for name in deps:
            modes[name] = FORCE if name == only else CACHE_ONLY if name in before else SKIP
    uncacheable = sorted(n for n, m in modes.items() if m == CACHE_ONLY and n in cache_disabled)
    if uncacheable:
        flag = f"--rerun-from {rerun_from}" if rerun_from else f"--only {only}"
        raise ir.PipelineError(
            f"{flag} needs {', '.join(uncacheable)} from the cache, but caching is off for "
            f"it in the pipeline (side effects); use --rerun-from {uncacheable[0]}"
        )
    return modes
