"""One task of a run: cache lookup, importer, container attempts with retries, outputs.

``TaskSteps`` is the per-task half of ``engine.Runner`` (a mixin: it uses the runner's
settings, backend, process table, run record and progress).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import pyarrow.fs as pafs

from components.contracts import storage
from components.contracts.settings import Settings
from pipelines.runner import cache as cache_mod
from pipelines.runner import executor, ir, procs, record
from pipelines.runner.plan import CACHE_ONLY, FORCE, RUN, RunOptions
from pipelines.runner.record import RunRecord


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


class TaskSteps:
    """Runs one task of a run (see the module doc); mixed into ``engine.Runner``."""

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
