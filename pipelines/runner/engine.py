"""Schedule and run the tasks of a compiled pipeline: cache, retries, resume, run record."""

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow.fs as pafs

from components.contracts import storage
from components.contracts.settings import Settings
from pipelines.runner import cache as cache_mod
from pipelines.runner import executor, ir, procs, record, summary
from pipelines.runner.record import RunRecord, TaskRecord

log = logging.getLogger(__name__)

# Task modes decided before the run starts.
RUN, FORCE, CACHE_ONLY, SKIP, DONE = "run", "force", "cache-only", "skip", "done"
KILL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when ``--resume`` stops a leftover task group."""


class RunBusy(ir.PipelineError):
    """``--resume`` of a run whose runner process is still alive (nothing was changed)."""


class RunFailed(RuntimeError):
    """The run did not succeed; ``record`` says which task and why."""

    def __init__(self, message: str, record: RunRecord | None = None):
        super().__init__(message)
        self.record = record


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


def _fmt_s(seconds: float) -> str:
    return f"{seconds:6.1f}s" if seconds < 600 else f"{seconds / 60:5.1f}m"


class Progress:
    """Thread-safe live progress lines on the terminal."""

    def __init__(self, out: TextIO | None, started: float):
        self.out = out
        self.started = started
        self.lock = threading.Lock()

    def line(self, task: str, text: str) -> None:
        if self.out is None:
            return
        with self.lock:
            elapsed = time.monotonic() - self.started
            try:
                print(f"[{_fmt_s(elapsed)}] {task:<16} {text}", file=self.out, flush=True)
            except OSError:  # a closed terminal or pipe must not fail the run
                self.out = None


class Runner:
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

    # ------------------------------------------------------------------ one task

    def _run_task(
        self,
        dag: ir.Dag,
        rec: RunRecord,
        task: ir.TaskNode,
        mode: str,
        store: cache_mod.CacheStore,
        base_env: Mapping[str, str],
        options: RunOptions,
        progress: Progress,
    ) -> bool:
        task_rec = rec.tasks[task.name]
        t0 = time.monotonic()
        task_rec.started_at = record.now_iso()
        upstream_params = {n: rec.tasks[n].output_parameters for n in task.dependencies}
        task_rec.parameters = ir.task_parameters(task, rec.parameters, upstream_params)
        task_rec.inputs = {
            name: {
                "producer": src.producer,
                "uri": rec.tasks[src.producer].outputs[src.output]["uri"],
                "digest": rec.tasks[src.producer].outputs[src.output]["digest"],
            }
            for name, src in task.artifacts.items()
        }
        if task.importer is not None:
            return self._import(rec, task, task_rec, t0, progress)

        if not task.cache_enabled:  # side effects: never read from nor written to the cache
            mode = FORCE
        else:
            command_template = list(task.container.command) + list(task.container.args)
            task_env = {**executor.container_env(task), **base_env}
            settings_part = (
                Settings.from_env(task_env).result_settings()
                if cache_mod.uses_settings(command_template)
                else {}
            )
            task_rec.cache_key = cache_mod.cache_key(
                cache_mod.component_digest(task.component_spec, task.container),
                cache_mod.code_digest(command_template),
                task_rec.parameters,
                {name: i["digest"] for name, i in task_rec.inputs.items()},
                settings_part,
            )
        key = task_rec.cache_key
        if mode in (RUN, CACHE_ONLY):
            entry = store.get(key)
            if entry is not None and store.outputs_valid(entry):
                task_rec.outputs = {
                    name: {k: v for k, v in out.items() if k != "etags"}
                    for name, out in entry["outputs"].items()
                }
                task_rec.output_parameters = entry.get("output_parameters", {})
                task_rec.status = record.SUCCEEDED
                task_rec.cache = "hit"
                task_rec.cached_from = entry.get("run_id", "")
                task_rec.finished_at = record.now_iso()
                task_rec.duration_s = round(time.monotonic() - t0, 3)
                self._save(rec)
                progress.line(task.name, f"cache hit (from run {entry.get('run_id', '?')})")
                return True
            if mode == CACHE_ONLY:
                task_rec.status = record.FAILED
                task_rec.error = (
                    "no cached result for this upstream task; run the whole pipeline once "
                    "(without --only / --rerun-from) first"
                )
                self._save(rec)
                progress.line(task.name, "FAILED: no cached result")
                return False
        task_rec.cache = "off" if not task.cache_enabled else "miss" if mode == RUN else "disabled"
        task_rec.status = record.RUNNING
        self._save(rec)
        ok = self._execute_container(dag, rec, task, task_rec, store, base_env, options, progress)
        task_rec.finished_at = record.now_iso()
        task_rec.duration_s = round(time.monotonic() - t0, 3)
        self._save(rec)
        return ok

    def _import(self, rec, task, task_rec, t0, progress) -> bool:
        spec = task.importer
        if spec.artifact_uri.HasField("runtime_parameter"):
            uri = task_rec.parameters[spec.artifact_uri.runtime_parameter]
        else:
            uri = spec.artifact_uri.constant.string_value
        name = next(iter(task.output_artifacts))
        try:
            if storage.is_s3(uri):
                tmp = self._run_dir(rec.run_id) / "staging" / task.name
                executor.reset_dir(tmp)
                local = self._download(uri, tmp / "artifact")
                digest = storage.digest_path(local)
            else:
                uri = str(Path(uri).resolve())
                digest = storage.digest_path(uri)
        except (FileNotFoundError, storage.StorageError) as exc:
            task_rec.status = record.FAILED
            task_rec.error = f"importer: no artifact at {uri} ({exc})"
            self._save(rec)
            progress.line(task.name, f"FAILED: {task_rec.error}")
            return False
        task_rec.outputs = {
            name: {
                "uri": uri,
                "digest": digest,
                "type": task.output_artifacts[name].artifact_type.schema_title,
                "metadata": {},
            }
        }
        task_rec.status = record.SUCCEEDED
        task_rec.cache = "import"
        task_rec.finished_at = record.now_iso()
        task_rec.duration_s = round(time.monotonic() - t0, 3)
        self._save(rec)
        progress.line(task.name, f"imported {uri} ({digest[:12]})")
        return True

    def _download(self, uri: str, local: Path) -> Path:
        fs, path = storage.filesystem(uri, self.settings.s3)
        if fs.get_file_info(path).type == pafs.FileType.File:
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(storage.read_bytes(uri, self.settings.s3))
        else:
            storage.download_dir(uri, local, self.settings.s3)
        return local

    def _upload(self, local: Path, uri: str) -> None:
        if local.is_dir():
            storage.upload_dir(local, uri, self.settings.s3)
        else:
            storage.write_bytes(local.read_bytes(), uri, self.settings.s3)

    def _execute_container(
        self, dag, rec, task, task_rec, store, base_env, options, progress
    ) -> bool:
        remote = storage.is_s3(rec.pipeline_root)
        final_root = storage.join(rec.pipeline_root, rec.pipeline_name, rec.run_id, task.name)
        if remote:
            task_root = self._run_dir(rec.run_id) / "staging" / task.name
        else:
            task_root = Path(final_root)
        log_path = self._run_dir(rec.run_id) / "logs" / f"{task.name}.log"
        task_rec.log = str(log_path)
        env = {**executor.container_env(task), **base_env}
        timeouts = [t for t in (options.task_timeout, task.timeout_s) if t]
        timeout_s = min(timeouts) if timeouts else None
        max_attempts = task.retry.max_retries + 1
        result = None
        for attempt in range(1, max_attempts + 1):
            task_rec.attempts = attempt
            self._save(rec)
            executor.reset_dir(task_root)
            inputs: dict[str, tuple[str, dict]] = {}
            for name, src in task.artifacts.items():
                out = rec.tasks[src.producer].outputs[src.output]
                uri = out["uri"]
                if storage.is_s3(uri):
                    local = task_root.parent / f"{task.name}.inputs" / name
                    shutil.rmtree(local, ignore_errors=True)
                    uri = str(self._download(uri, local))
                inputs[name] = (uri, out.get("metadata", {}))
            exec_input = executor.build_executor_input(
                task, task_rec.parameters, inputs, str(task_root)
            )
            command = self.backend.resolve_command(
                task, exec_input, pipeline_name=rec.pipeline_name,
                pipeline_root=rec.pipeline_root, run_id=rec.run_id,
            )  # fmt: skip
            retry_note = f" (attempt {attempt}/{max_attempts})" if attempt > 1 else ""
            progress.line(task.name, f"started{retry_note}")

            def record_process(proc: subprocess.Popen) -> None:
                if self._stopping.is_set():  # started while the run was being interrupted
                    raise RuntimeError("run interrupted")  # run_attempt kills it
                try:
                    task_rec.process = procs.identity(proc.pid)  # its own group (new session)
                except ProcessLookupError:  # a container (--docker): no host process group
                    task_rec.process = {}
                self._save(rec)

            result = self.backend.run_attempt(
                task, command, executor_input=exec_input, env=env, log_path=log_path,
                timeout_s=timeout_s, attempt=attempt, procs=self._procs, on_start=record_process,
            )  # fmt: skip
            task_rec.process = {}
            task_rec.exit_code = result.exit_code
            if result.ok:
                break
            task_rec.error = result.error
            if attempt == max_attempts or self._stopping.is_set():
                break
            delay = task.retry.delay(attempt)
            progress.line(task.name, f"attempt {attempt} {result.error}; retrying in {delay:g}s")
            time.sleep(delay)
        assert result is not None
        if not result.ok:
            task_rec.status = record.FAILED
            progress.line(task.name, f"FAILED: {result.error} (log: {log_path})")
            snippet = executor.tail(log_path)
            if progress.out is not None and snippet:
                with contextlib.suppress(OSError):
                    print(
                        f"----- last lines of {log_path} -----\n{snippet}\n-----",
                        file=self.out,
                        flush=True,
                    )
            return False
        outputs: dict[str, dict[str, Any]] = {}
        for name, spec in task.output_artifacts.items():
            local = task_root / name
            uri = storage.join(final_root, name) if remote else str(local)
            outputs[name] = {
                "uri": uri,
                "digest": storage.digest_path(local),
                "type": spec.artifact_type.schema_title,
                "metadata": result.output_metadata.get(name, {}),
            }
        if remote:
            for name in task.output_artifacts:
                self._upload(task_root / name, outputs[name]["uri"])
            shutil.rmtree(task_root.parent / f"{task.name}.inputs", ignore_errors=True)
            shutil.rmtree(task_root, ignore_errors=True)
        task_rec.outputs = outputs
        task_rec.output_parameters = result.output_parameters
        task_rec.status = record.SUCCEEDED
        task_rec.error = ""
        if not task.cache_enabled:
            progress.line(task.name, f"finished in {result.duration_s:.1f}s (caching off)")
            return True
        # Only now, with every output written (and uploaded), is the result trusted.
        store.put(
            task_rec.cache_key,
            {
                "task": task.name,
                "component": task.component_name,
                "run_id": rec.run_id,
                "created_at": record.now_iso(),
                "outputs": outputs,
                "output_parameters": result.output_parameters,
            },
        )
        progress.line(task.name, f"finished in {result.duration_s:.1f}s")
        return True
