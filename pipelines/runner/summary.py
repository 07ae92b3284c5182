"""Human summaries of run records: the end-of-run report, ``runs`` table, ``show``."""

from __future__ import annotations

import json
from typing import Any

from components.contracts import storage
from components.contracts.settings import Settings
from components.evaluate.spec import SPEC as HEADLINE_STAGE
from components.register.spec import SPEC as DECISION_STAGE
from pipelines.runner.record import RunRecord

HEADLINE_TASK = HEADLINE_STAGE.name
DECISION_TASK = DECISION_STAGE.name
# Shown first when present (the stage spec's headline); other scalars fill up to the limit.
HEADLINE_KEYS = HEADLINE_STAGE.headline


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


COHORT_PREFIX = "cohort_"
"""Label-side cohort metrics (``cohort_<value>_...``) are shown after the headline when present."""
CI_SUFFIXES = ("_ci_low", "_ci_high")


def headline_metrics(rec: RunRecord, limit: int | None = None) -> dict[str, Any]:
    """Scalar metrics of the evaluate task's ``metrics`` artifact (KFP Metrics metadata):
    the headline keys first, then the label-side cohorts' false-alarm rates and recalls,
    then the others up to ``limit`` (default: the headline and cohorts only, else 9)."""
    task = rec.tasks.get(HEADLINE_TASK)
    if task is None:
        return {}
    meta = task.outputs.get("metrics", {}).get("metadata", {})
    scalars = {
        k: v for k, v in meta.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    preferred = [k for k in HEADLINE_KEYS if k in scalars]
    cohorts = sorted(
        k
        for k in scalars
        if k.startswith(COHORT_PREFIX)
        and k.endswith(("_false_alarm_rate_at_1pct_fpr", "_recall_at_1pct_fpr"))
    )
    cohorts = [k for c in cohorts for k in (c, c + CI_SUFFIXES[0], c + CI_SUFFIXES[1])]
    rest = sorted(k for k in scalars if k not in preferred and k not in cohorts)
    keys = preferred + [k for k in cohorts if k in scalars]
    if limit is None:
        limit = len(keys) or 9
    return {k: scalars[k] for k in (keys + rest)[:limit]}


def metric_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per metric; a metric's ``_ci_low`` / ``_ci_high`` go in brackets after it."""
    lines = []
    for k, v in metrics.items():
        if k.endswith(CI_SUFFIXES):
            continue
        low, high = metrics.get(k + CI_SUFFIXES[0]), metrics.get(k + CI_SUFFIXES[1])
        ci = (
            f"  [{_number(low)}, {_number(high)}] 95%"
            if low is not None and high is not None
            else ""
        )
        lines.append(f"  {k:<36} {_number(v)}{ci}")
    return lines


def read_decision(rec: RunRecord, settings: Settings | None = None) -> dict[str, Any] | None:
    """The register task's decision JSON, or None when it did not run or is unreadable."""
    task = rec.tasks.get(DECISION_TASK)
    if task is None or "decision" not in task.outputs:
        return None
    try:
        data = storage.read_json(task.outputs["decision"]["uri"], settings.s3 if settings else None)
    except (storage.StorageError, OSError):
        return None
    return data if isinstance(data, dict) else None


def registry_lines(rec: RunRecord, settings: Settings) -> list[str]:
    """What the register task did to the registry IN THIS RUN (nothing for a cached result)."""
    task = rec.tasks.get(DECISION_TASK)
    if task is None or task.status != "succeeded":
        return []
    if task.cache == "hit":
        return [
            "",
            "Registry:",
            f"  nothing registered in this run: {DECISION_TASK} came from the cache "
            f"(run {task.cached_from or '?'}); its caching should be off",
        ]
    decision = read_decision(rec, settings)
    if decision is None:
        return []
    name = decision.get("model_name", settings.mlflow.model_name)
    alias = decision.get("alias", settings.mlflow.champion_alias)
    lines = ["", "Registry:", f"  model {name} version {decision.get('model_version')}"]
    if decision.get("alias_moved"):
        lines.append(f"  champion: yes - alias {alias} moved")
    else:
        lines.append(f"  champion: no - alias {alias} stays on {decision.get('champion_after')}")
        if decision.get("reason"):
            lines.append(f"  gate: {json.dumps(decision['reason'], default=str)[:200]}")
    return lines


def run_summary(rec: RunRecord, settings: Settings) -> str:
    """The end-of-run summary: tasks, metrics, registered model, next commands."""
    lines = [f"Run {rec.run_id}: {rec.status} in {rec.duration_s:.1f}s", ""]
    lines.append(f"  {'task':<16} {'status':<10} {'cache':<9} {'time':>8}  attempts")
    for task in rec.tasks.values():
        lines.append(
            f"  {task.name:<16} {task.status:<10} {task.cache or '-':<9} "
            f"{task.duration_s:>7.1f}s  {task.attempts or '-'}"
        )
    hits = rec.cache_hits
    lines.append(f"  cache hits: {hits}/{len(rec.tasks)}")
    off = [t.name for t in rec.tasks.values() if t.cache == "off"]
    if off:
        lines.append(
            f"  caching off in the pipeline (side effects; ran, never cached): {', '.join(off)}"
        )
    metrics = headline_metrics(rec)
    if metrics:
        lines += ["", "Headline metrics (evaluate; thresholds fixed on valid, counted on test):"]
        lines += metric_lines(metrics)
    lines += registry_lines(rec, settings)
    lines += [
        "",
        "Next:",
        "  make serve                      # serve the champion model",
        f"  mlflow ui --backend-store-uri {settings.mlflow.tracking_uri}",
        f"  python -m pipelines show {rec.run_id}",
    ]
    return "\n".join(lines)


def resume_line(run_id: str, found: dict[str, Any]) -> str:
    """What ``--resume`` found (one entry of ``RunRecord.resumes``), as one line."""
    killed = found.get("killed") or {}
    groups = (
        "killed leftover task process groups: "
        + ", ".join(f"{name} (pids {' '.join(map(str, pids))})" for name, pids in killed.items())
        if killed
        else "no task process left running"
    )
    redo = ", ".join(found.get("redo") or []) or "nothing"
    return f"resume {run_id}: previous runner {found['runner']} (status {found.get('status', '?')}); {groups}; to redo: {redo}"


def runs_table(records: list[RunRecord]) -> str:
    """One line per run, newest first."""
    if not records:
        return "no runs yet (python -m pipelines run)"
    lines = [f"{'run id':<44} {'status':<12} {'started':<20} {'time':>8} {'cache':>6}"]
    for rec in records:
        lines.append(
            f"{rec.run_id:<44} {rec.status:<12} {rec.started_at[:19]:<20} "
            f"{rec.duration_s:>7.1f}s {rec.cache_hits:>2}/{len(rec.tasks):<3}"
        )
    return "\n".join(lines)


def show(rec: RunRecord) -> str:
    """Details of one run: parameters, per-task lineage (artifact URIs and digests), metadata."""
    lines = [
        f"run       {rec.run_id}",
        f"status    {rec.status}{' - ' + rec.error if rec.error else ''}",
        f"pipeline  {rec.pipeline_name} ({rec.pipeline_file}, sha256 {rec.pipeline_sha256[:12]})",
        f"root      {rec.pipeline_root}",
        f"started   {rec.started_at}  duration {rec.duration_s:.1f}s  resumed {rec.resumed}x",
        "params    " + ", ".join(f"{k}={v}" for k, v in sorted(rec.parameters.items())),
    ]
    if rec.runner:
        lines.append(
            f"runner    pid {rec.runner.get('pid')} (group {rec.runner.get('pgid')}) "
            f"on {rec.runner.get('host')}"
        )
    lines += [
        f"resumed   {found.get('at', '')}: {resume_line(rec.run_id, found)}"
        for found in rec.resumes
    ]
    lines.append("")
    for task in rec.tasks.values():
        head = f"{task.name}: {task.status}"
        if task.cache:
            head += f", cache {task.cache}"
        if task.cached_from:
            head += f" (from run {task.cached_from})"
        head += f", {task.duration_s:.1f}s, attempts {task.attempts}"
        if task.error:
            head += f", error: {task.error}"
        lines.append(head)
        for name, art in task.inputs.items():
            lines.append(f"    in  {name:<24} {art['digest'][:12]} {art['uri']}")
        for name, art in task.outputs.items():
            lines.append(f"    out {name:<24} {art['digest'][:12]} {art['uri']}")
            if art.get("metadata"):
                lines.append(f"        metadata {json.dumps(art['metadata'], default=str)[:300]}")
        if task.log:
            lines.append(f"    log {task.log}")
    return "\n".join(lines)
