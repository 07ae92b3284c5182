"""Schedule and run the tasks of a compiled pipeline: cache, retries, resume, run record.

The run as a whole lives here (``Runner``: record, resume, scheduling, interrupts); options
and task modes in ``plan``; one task (cache, importer, attempts, outputs) in ``task``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from components.contracts import storage
from components.contracts.settings import Settings
from pipelines.runner import cache as cache_mod
from pipelines.runner import executor, ir, procs, record, summary
from pipelines.runner.plan import (  # noqa: F401 (re-exported: the engine's public names)
    CACHE_ONLY,
    DONE,
    FORCE,
    RUN,
    SKIP,
    RunOptions,
    plan_modes,
)
from pipelines.runner.record import RunRecord, TaskRecord
from pipelines.runner.task import Progress, TaskSteps

log = logging.getLogger(__name__)

KILL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when ``--resume`` stops a leftover task group."""


class RunBusy(ir.PipelineError):
    """``--resume`` of a run whose runner process is still alive (nothing was changed)."""


class RunFailed(RuntimeError):
    """The run did not succeed; ``record`` says which task and why."""

    def __init__(self, message: str, record: RunRecord | None = None):
        super().__init__(message)
        self.record = record


class Runner(TaskSteps):
    """Runs compiled pipeline YAML locally. One instance per run."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        out: TextIO | None = sys.stderr,
        backend: Any = None,
    ):
        self.settings = settings or Settings.from_env()
        self.out = out
        # Where a task's command runs: this venv (the executor module) or its image
        # (runner.container.ContainerBackend); both have resolve_command and run_attempt.
        self.backend = backend or executor
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._stopping = threading.Event()  # set on interrupt: no new attempt may start

    # ------------------------------------------------------------------ public

    def run(self, pipeline_path: str | Path | None, options: RunOptions | None = None) -> RunRecord:
        """Run (or resume) a pipeline; returns the run record of a successful run.

        Raises:
            PipelineError: Bad pipeline file or arguments (nothing ran).
            RunFailed: A task failed; the record is saved and the run can be resumed.
            KeyboardInterrupt: The user interrupted; running tasks were killed, the run
                is recorded as interrupted and can be resumed.
        """
        options = options or RunOptions()
        var = self.settings.home
        if options.resume:
            rec = record.load(var, options.resume)
            if rec.status == record.RUN_SUCCEEDED:
                raise ir.PipelineError(f"run {rec.run_id} already succeeded; nothing to resume")
            pipeline_copy = self._run_dir(rec.run_id) / "pipeline.yaml"
            if (
                not pipeline_copy.exists()
                or storage.sha256_file(pipeline_copy) != rec.pipeline_sha256
            ):
                raise ir.PipelineError(
                    f"run {rec.run_id}: its pipeline copy {pipeline_copy} is missing or changed"
                )
            spec, platform = ir.load_pipeline(pipeline_copy)
            dag = ir.build_dag(spec, platform)
            self._take_over(rec, dag)
            saved = rec.options
            modes = plan_modes(
                dag.dependencies,
                rerun_from=saved.get("rerun_from"),
                only=saved.get("only"),
                no_cache=options.no_cache or saved.get("no_cache", False),
                cache_disabled={n for n, t in dag.tasks.items() if not t.cache_enabled},
            )
            for name, task_rec in rec.tasks.items():
                if task_rec.status == record.SUCCEEDED:
                    modes[name] = DONE
                else:
                    rec.tasks[name] = TaskRecord(name=name)
            rec.resumed += 1
            rec.status = record.RUN_RUNNING
            rec.error = ""
            rec.finished_at = ""
        else:
            if pipeline_path is None:
                raise ir.PipelineError("no pipeline YAML given")
            pipeline_path = Path(pipeline_path)
            spec, platform = ir.load_pipeline(pipeline_path)
            dag = ir.build_dag(spec, platform)
            if hasattr(self.backend, "check"):  # e.g. every image present before any task
                self.backend.check(dag)
            params = ir.resolve_parameters(dag, options.params)
            modes = plan_modes(
                dag.dependencies,
                rerun_from=options.rerun_from,
                only=options.only,
                no_cache=options.no_cache,
                cache_disabled={n for n, t in dag.tasks.items() if not t.cache_enabled},
            )
            rec = RunRecord(
                run_id=record.new_run_id(dag.name),
                pipeline_name=dag.name,
                pipeline_file=str(pipeline_path.resolve()),
                pipeline_sha256=storage.sha256_file(pipeline_path),
                pipeline_root=options.pipeline_root or self.settings.pipeline_root,
                parameters=params,
                options={
                    k: v
                    for k, v in asdict(options).items()
                    if k in ("rerun_from", "only", "no_cache", "parallelism", "task_timeout")
                },
                tasks={
                    name: TaskRecord(name=name) for name in ir.topological_order(dag.dependencies)
                },
            )
            run_dir = self._run_dir(rec.run_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pipeline_path, run_dir / "pipeline.yaml")
        for name, mode in modes.items():
            if mode == SKIP:
                rec.tasks[name].status = record.SKIPPED
        return self._execute_run(dag, rec, modes, options)

    # ------------------------------------------------------------------ internals

    def _take_over(self, rec: RunRecord, dag: ir.Dag) -> None:
        """Before resuming: refuse while the old runner lives, stop its leftover task
        process groups, and say (and record) what was found.

        Raises:
            RunBusy: The runner of the run is still alive.
        """
        old = rec.runner
        here = procs.identity()
        if not old:
            state = "unknown (no runner recorded)"
        elif old.get("host") != here["host"]:
            state = f"unknown (pid {old.get('pid')} ran on host {old.get('host')})"
        elif rec.status != record.RUN_RUNNING:
            state = f"finished the run (pid {old.get('pid')})"  # it recorded the end itself
        elif old.get("pid") == here["pid"] and old.get("start") == here["start"]:
            state = "this process (no longer running it)"
        elif procs.alive(old):
            raise RunBusy(
                f"run {rec.run_id} is still being run by pid {old['pid']} "
                f"(process group {old.get('pgid')}); stop it or wait for it, then resume"
            )
        else:
            state = f"dead (pid {old.get('pid')})"
        # Recorded task groups, plus any other group running with this run's id (a task
        # started in the instant before its group was recorded).
        groups = {
            int(t.process.get("pgid") or 0): name
            for name, t in rec.tasks.items()
            if t.process and t.process.get("host") == here["host"]
        }
        for pgid in procs.run_groups(rec.run_id) - set(groups):
            groups[pgid] = f"unrecorded group {pgid}"
        killed: dict[str, list[int]] = {}
        for pgid, name in groups.items():
            pids = procs.stop_group(pgid, rec.run_id, KILL_GRACE_S)
            if pids:
                killed[name] = pids
        for task_rec in rec.tasks.values():
            task_rec.process = {}
        order = ir.topological_order(dag.dependencies)
        redo = [n for n in order if rec.tasks[n].status != record.SUCCEEDED]
        found = {
            "at": record.now_iso(),
            "status": rec.status,
            "runner": state,
            "killed": killed,
            "redo": redo,
        }
        rec.resumes.append(found)
        if self.out is not None:
            with contextlib.suppress(OSError):
                print(summary.resume_line(rec.run_id, found), file=self.out, flush=True)

    def _run_dir(self, run_id: str) -> Path:
        return record.runs_dir(self.settings.home) / run_id

    def _save(self, rec: RunRecord) -> None:
        with self._lock:
            record.save(rec, self.settings.home)

    def _base_env(self, run_id: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PIPELINE_RUN_ID"] = run_id
        env["VAR_DIR"] = str(self.settings.home)
        # The tasks must import the same code the runner does (a checkout run from its root).
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
        return env

    def _execute_run(
        self, dag: ir.Dag, rec: RunRecord, modes: dict[str, str], options: RunOptions
    ) -> RunRecord:
        started = time.monotonic()
        progress = Progress(self.out, started)
        rec.runner = procs.identity()
        self._save(rec)
        progress.line(
            "run", f"{rec.run_id} ({'resumed' if rec.resumed else 'new'}), root {rec.pipeline_root}"
        )
        store = cache_mod.CacheStore(rec.pipeline_root, self.settings.s3)
        base_env = self._base_env(rec.run_id)
        deps = dag.dependencies
        done = {n for n, m in modes.items() if m == DONE}
        skipped = {n for n, m in modes.items() if m == SKIP}
        started_tasks = set(done) | skipped
        failed: list[str] = []
        futures: dict[cf.Future, str] = {}
        pool = cf.ThreadPoolExecutor(max_workers=max(1, options.parallelism))
        try:
            while True:
                if not failed:
                    for name in ir.ready_tasks(deps, done, started_tasks):
                        started_tasks.add(name)
                        fut = pool.submit(
                            self._run_task, dag, rec, dag.tasks[name], modes[name], store,
                            base_env, options, progress,
                        )  # fmt: skip
                        futures[fut] = name
                if not futures:
                    break
                finished, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    name = futures.pop(fut)
                    try:
                        ok = fut.result()
                    except Exception as exc:  # a runner bug or storage error: fail the task
                        log.exception("task %s crashed in the runner", name)
                        task_rec = rec.tasks[name]
                        task_rec.status = record.FAILED
                        task_rec.error = f"runner error: {exc}"
                        self._save(rec)
                        ok = False
                    if ok:
                        done.add(name)
                    else:
                        failed.append(name)
        except KeyboardInterrupt:
            self._stopping.set()
            for proc in list(self._procs.values()):
                executor._kill_tree(proc)
            pool.shutdown(wait=True, cancel_futures=True)
            for task_rec in rec.tasks.values():
                if task_rec.status in (record.RUNNING, record.PENDING):
                    task_rec.status = (
                        record.NOT_RUN if task_rec.status == record.PENDING else record.FAILED
                    )
                    task_rec.error = task_rec.error or "interrupted"
            rec.status = record.RUN_INTERRUPTED
            rec.error = "interrupted by the user"
            self._finish(rec, started)
            progress.line(
                "run", f"interrupted; resume with: python -m pipelines run --resume {rec.run_id}"
            )
            raise
        finally:
            pool.shutdown(wait=True)
        for task_rec in rec.tasks.values():
            if task_rec.status == record.PENDING:
                task_rec.status = record.NOT_RUN
        if failed:
            rec.status = record.RUN_FAILED
            first = rec.tasks[failed[0]]
            rec.error = f"task '{first.name}' failed: {first.error}"
            self._finish(rec, started)
            raise RunFailed(rec.error, rec)
        rec.status = record.RUN_SUCCEEDED
        self._finish(rec, started)
        return rec

    def _finish(self, rec: RunRecord, started: float) -> None:
        rec.finished_at = record.now_iso()
        rec.duration_s = round(rec.duration_s + time.monotonic() - started, 3)
        self._save(rec)
