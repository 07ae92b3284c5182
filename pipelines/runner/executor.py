"""Execute one container task the way the KFP launcher does, in the current venv.

The executor input is built and placeholders resolved with ``kfp.local``'s own
``executor_input_utils`` / ``placeholder_utils`` (so ``{{$}}``, ``{{$.outputs.output_file}}``,
artifact ``.path`` and parameter placeholders resolve exactly as under ``kfp.local``), the
executor output JSON is read with ``executor_output_utils``. The container image is ignored:
``python`` in the command becomes ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from kfp.dsl import executor as dsl_executor
from kfp.local import executor_input_utils, executor_output_utils, placeholder_utils

from pipelines.runner.ir import TaskNode

log = logging.getLogger(__name__)

EXECUTOR_OUTPUT_FILE = "executor_output.json"


@dataclass
class AttemptResult:
    """Outcome of one attempt of one task."""

    ok: bool
    exit_code: int | None
    error: str = ""
    duration_s: float = 0.0
    output_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    output_parameters: dict[str, Any] = field(default_factory=dict)


def input_artifact(name: str, schema_title: str, schema_version: str, uri: str, metadata=None):
    """A ``dsl.Artifact`` of the right class for an input, as kfp.local passes them."""
    return dsl_executor.create_artifact_instance(
        {
            "name": name,
            "uri": uri,
            "metadata": metadata or {},
            "type": {"schemaTitle": schema_title, "schemaVersion": schema_version},
        }
    )


def build_executor_input(
    task: TaskNode,
    parameters: Mapping[str, Any],
    input_uris: Mapping[str, tuple[str, Mapping[str, Any]]],
    task_root: str,
) -> dict[str, Any]:
    """The executor input (``{{$}}``) as a dict, built by ``kfp.local``.

    Args:
        task: The task.
        parameters: Resolved input parameter values.
        input_uris: Input artifact name -> (local path, metadata).
        task_root: Folder where outputs go (``<task_root>/<output name>``) and where
            ``executor_output.json`` is expected.
    """
    arguments: dict[str, Any] = dict(parameters)
    defs = task.component_spec.input_definitions.artifacts
    for name, (uri, metadata) in input_uris.items():
        schema = defs[name].artifact_type
        arguments[name] = input_artifact(
            name, schema.schema_title, schema.schema_version, uri, dict(metadata)
        )
    message = executor_input_utils.construct_executor_input(
        component_spec=task.component_spec,
        arguments=arguments,
        task_root=task_root,
        block_input_artifact=False,
    )
    return executor_input_utils.executor_input_to_dict(message, task.component_spec)


def resolve_command(
    task: TaskNode,
    executor_input: dict[str, Any],
    *,
    pipeline_name: str,
    pipeline_root: str,
    run_id: str,
) -> list[str]:
    """The task's full command line with every placeholder resolved by ``kfp.local``."""
    assert task.container is not None
    full = list(task.container.command) + list(task.container.args)
    resolved = placeholder_utils.replace_placeholders(
        full_command=full,
        executor_input_dict=executor_input,
        pipeline_resource_name=pipeline_name,
        task_resource_name=task.name,
        pipeline_root=pipeline_root,
        unique_pipeline_id=run_id,
    )
    if resolved and resolved[0] in ("python", "python3", f"python{sys.version_info[0]}"):
        resolved[0] = sys.executable
    return resolved


def container_env(task: TaskNode) -> dict[str, str]:
    """Environment variables the compiled YAML sets on the task's container."""
    if task.container is None:
        return {}
    return {e.name: e.value for e in task.container.env}


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_attempt(
    task: TaskNode,
    command: list[str],
    *,
    executor_input: dict[str, Any],
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float | None,
    attempt: int,
    procs: dict[str, subprocess.Popen] | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> AttemptResult:
    """Run one attempt of a container task as a subprocess and check its outputs.

    The process gets its own process group so a timeout kills the whole tree; its stdout
    and stderr are appended to ``log_path``. ``on_start`` is called with the process as soon
    as it exists (the engine records its group in the run record).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "ab") as out:
        out.write(f"===== {task.name} attempt {attempt}: {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
        if procs is not None:
            procs[task.name] = proc
        try:
            if on_start is not None:
                on_start(proc)
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            proc.wait()
            return AttemptResult(
                False, None, f"timed out after {timeout_s:g}s", time.monotonic() - started
            )
        except BaseException:  # never leave the task running behind a failed runner
            _kill_tree(proc)
            proc.wait()
            raise
        finally:
            if procs is not None:
                procs.pop(task.name, None)
    return check_attempt(task, executor_input, code, time.monotonic() - started)


def check_attempt(
    task: TaskNode, executor_input: dict[str, Any], code: int, duration: float
) -> AttemptResult:
    """Judge a finished attempt: exit code, every output written, a valid executor output."""
    task_root = Path(executor_input["outputs"]["outputFile"]).parent
    if code != 0:
        reason = f"exited with code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                reason = f"killed by {signal.Signals(-code).name} (exit code {code})"
        return AttemptResult(False, code, reason, duration)
    missing = [
        name for name in task.output_artifacts if not os.path.exists(os.path.join(task_root, name))
    ]
    if missing:
        return AttemptResult(
            False, 0, f"exited 0 but did not write output(s): {', '.join(missing)}", duration
        )
    try:
        metadata, out_params = read_executor_output(task, executor_input)
    except ValueError as exc:
        return AttemptResult(False, 0, f"invalid executor output: {exc}", duration)
    return AttemptResult(True, 0, "", duration, metadata, out_params)


def read_executor_output(
    task: TaskNode, executor_input: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Artifact metadata and output parameters a task reported, via ``kfp.local``."""
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb

    message = pb.ExecutorInput()
    json_format.ParseDict(executor_input, message)
    try:
        output = executor_output_utils.load_executor_output(message.outputs.output_file)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from exc
    output = executor_output_utils.merge_dsl_output_file_parameters_to_executor_output(
        executor_input=message, executor_output=output, component_spec=task.component_spec
    )
    metadata: dict[str, dict[str, Any]] = {}
    for name, artifact_list in output.artifacts.items():
        if name not in task.output_artifacts:
            raise ValueError(f"executor output names unknown artifact '{name}'")
        if artifact_list.artifacts:
            metadata[name] = json_format.MessageToDict(artifact_list.artifacts[0].metadata)
    params = {
        name: executor_output_utils.pb2_value_to_python(value)
        for name, value in output.parameter_values.items()
    }
    params = executor_output_utils.cast_protobuf_numbers(
        params, task.component_spec.output_definitions.parameters
    )
    return metadata, params


def reset_dir(path: Path) -> None:
    """Empty ``path`` (partial outputs of an earlier attempt) and recreate it."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64_000))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
