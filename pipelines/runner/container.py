"""Run each task of a compiled pipeline in its stage image through the Docker SDK.

The local runner's scheduling, cache, retries and run record are unchanged; only where a
task's command runs differs (``Runner(backend=ContainerBackend(...))``). KFP's container
semantics are kept:

- the component's ``command`` replaces the image ``ENTRYPOINT`` and its ``args`` the
  ``CMD`` (a Kubernetes container's ``command``/``args``), so the stage runs once;
- the container runs as the image's own user (UID 10001) in the image's working directory;
  the task's output folder is made writable for it, its inputs are mounted read-only, each
  at the same path as on the host, so the executor input's paths hold inside and out;
- an image is never pulled: a missing one is a one-line error naming ``make images``;
- containers use the host network (the MLflow server, an S3 endpoint on loopback).

Tracking: the container gets the runner's ``MLFLOW_TRACKING_URI`` / S3 settings. An
``http(s)://`` tracking server needs nothing more; a local SQLite store (the embedded default)
is mounted at the same path and made writable for UID 10001.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kfp.local import placeholder_utils

from components.contracts.settings import Settings
from pipelines.runner import executor
from pipelines.runner.ir import Dag, PipelineError, TaskNode

log = logging.getLogger(__name__)

PASS_ENV_PREFIXES = ("MLFLOW_", "AWS_", "KFP_")
"""Runner environment variables passed into every container (tracking, S3, KFP identity)."""
PASS_ENV = ("PIPELINE_RUN_ID", "S3_ENDPOINT_URL")
LABEL = "io.cashier-integrity.run-id"
"""Container label carrying the run id (``docker ps --filter label=...``)."""


class Argv(list):
    """A resolved command line that remembers where the component ``command`` ends."""

    def __init__(self, command: Iterable[str], args: Iterable[str]):
        command = list(command)
        super().__init__([*command, *args])
        self.n_command = len(command)

    @property
    def entrypoint(self) -> list[str]:
        return self[: self.n_command]

    @property
    def cmd(self) -> list[str]:
        return self[self.n_command :]


class ContainerHandle:
    """What the runner's interrupt path kills: the task's container, not a host process.

    It stands where the subprocess runner keeps a ``Popen``; ``executor._kill_tree`` reads
    ``pid`` for a process group (there is none on the host, so ``ProcessLookupError``) and
    falls back to ``kill()``.
    """

    def __init__(self, container: Any):
        self.container = container

    @property
    def pid(self) -> int:
        raise ProcessLookupError("a container has no host process group")

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.container.kill()


def engine_available(timeout: int = 3) -> bool:
    """True when a Docker engine answers a ping through the Docker SDK."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def missing_images(client: Any, images: Iterable[str]) -> list[str]:
    """The references among ``images`` the engine does not have (never pulls)."""
    from docker.errors import ImageNotFound

    missing = []
    for ref in sorted(set(images)):
        try:
            client.images.get(ref)
        except ImageNotFound:
            missing.append(ref)
    return missing


def task_images(dag: Dag) -> dict[str, str]:
    """``{task name: image}`` of every container task of the pipeline."""
    return {name: t.container.image for name, t in dag.tasks.items() if t.container is not None}


def container_env(task: TaskNode, env: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The task's environment: the YAML's ``env``, tracking/S3 settings, the run id.

    The host's environment is not passed wholesale (its PATH or PYTHONPATH would break the
    image); the image's own ENV (``PATH``, ``PYTHONPATH``, ``VAR_DIR``) stays in effect.
    """
    out = executor.container_env(task)
    for key, value in env.items():
        if key.startswith(PASS_ENV_PREFIXES) or key in PASS_ENV:
            out.setdefault(key, value)
    # The runner's settings, so a stage inside resolves the same stores and names.
    out.setdefault("MLFLOW_TRACKING_URI", settings.mlflow.tracking_uri)
    out.setdefault("MLFLOW_ARTIFACT_LOCATION", settings.mlflow.artifact_location)
    out.setdefault("MLFLOW_EXPERIMENT_NAME", settings.mlflow.experiment)
    out.setdefault("MODEL_NAME", settings.mlflow.model_name)
    out.setdefault("CHAMPION_ALIAS", settings.mlflow.champion_alias)
    if settings.s3.endpoint_url:
        out.setdefault("S3_ENDPOINT_URL", settings.s3.endpoint_url)
    return out


def _local_path(uri: str) -> str | None:
    """The host folder/file behind a local URI; None for anything remote (``http://``,
    ``s3://``, ``mlflow-artifacts:/``, ``databricks``...)."""
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    if uri.startswith("sqlite:///"):
        return os.path.dirname(os.path.abspath(uri.removeprefix("sqlite:///")))
    if not uri or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return None
    return os.path.abspath(uri)


def tracking_mounts(env: Mapping[str, str]) -> list[str]:
    """Host folders a local tracking store lives in (empty for an http tracking server)."""
    folders = []
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_LOCATION"):
        path = _local_path(env.get(key, ""))
        if path:
            folders.append(path)
    return folders


def make_writable(path: Path) -> None:
    """Let the image's user (UID 10001) write under ``path`` (a+rwX, recursively)."""
    path.mkdir(parents=True, exist_ok=True)
    for root, _dirs, files in os.walk(path):
        os.chmod(root, 0o777)
        for name in files:
            with contextlib.suppress(OSError):
                p = os.path.join(root, name)
                os.chmod(p, os.stat(p).st_mode | 0o666)


def volumes_for(executor_input: Mapping[str, Any], extra_rw: Iterable[str] = ()) -> dict:
    """Docker ``volumes``: the task folder read-write, every input read-only, same paths."""
    task_root = os.path.dirname(executor_input["outputs"]["outputFile"])
    vols: dict[str, dict[str, str]] = {task_root: {"bind": task_root, "mode": "rw"}}
    for path in extra_rw:
        vols[path] = {"bind": path, "mode": "rw"}
    for artifact_list in executor_input.get("inputs", {}).get("artifacts", {}).values():
        for artifact in artifact_list.get("artifacts", []):
            path = _local_path(artifact.get("uri", ""))
            if path and not any(path == v or path.startswith(v + os.sep) for v in vols):
                vols[path] = {"bind": path, "mode": "ro"}
    return vols


class ContainerBackend:
    """Executes container tasks in their images (the runner's ``backend``)."""

    def __init__(self, settings: Settings, client: Any = None, *, network: str = "host"):
        self.settings = settings
        self.network = network
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            from pipelines.images import BuildError, connect

            try:
                self._client = connect(timeout=60)
            except BuildError as exc:
                raise PipelineError(str(exc)) from exc
        return self._client

    def check(self, dag: Dag) -> None:
        """Fail before anything runs when an image of the pipeline is not present locally.

        Raises:
            PipelineError: one line listing the missing references and naming ``make images``.
        """
        missing = missing_images(self.client, task_images(dag).values())
        if missing:
            raise PipelineError(
                f"image(s) not present locally: {', '.join(missing)}; build them with "
                "`make images` (this runner never pulls)"
            )

    def resolve_command(
        self,
        task: TaskNode,
        executor_input: dict[str, Any],
        *,
        pipeline_name: str,
        pipeline_root: str,
        run_id: str,
    ) -> Argv:
        """The component's command and args, resolved like the runner's local executor
        (``kfp.local``'s placeholder resolver) but kept apart: entrypoint and cmd."""
        assert task.container is not None

        def resolve(parts: list[str]) -> list[str]:
            return placeholder_utils.replace_placeholders(
                full_command=parts,
                executor_input_dict=executor_input,
                pipeline_resource_name=pipeline_name,
                task_resource_name=task.name,
                pipeline_root=pipeline_root,
                unique_pipeline_id=run_id,
            )

        return Argv(resolve(list(task.container.command)), resolve(list(task.container.args)))

    def run_attempt(
        self,
        task: TaskNode,
        command: list[str],
        *,
        executor_input: dict[str, Any],
        env: Mapping[str, str],
        log_path: Path,
        timeout_s: float | None,
        attempt: int,
        procs: dict[str, Any] | None = None,
        on_start: Callable[[Any], None] | None = None,
    ) -> executor.AttemptResult:
        """Run one attempt of ``task`` in its image; outputs are checked like a local run.

        ``on_start`` is called with the container's handle before it starts (the runner
        refuses new attempts while it is being interrupted by raising there). A container has
        no host process group, so ``--resume`` cannot stop one a killed runner left behind:
        they carry the run id as label ``io.cashier-integrity.run-id``
        (``docker rm -f $(docker ps -q --filter label=io.cashier-integrity.run-id=RUN_ID)``).
        """
        from docker.errors import APIError, ImageNotFound

        assert task.container is not None
        argv = command if isinstance(command, Argv) else Argv(command, [])
        task_env = container_env(task, env, self.settings)
        task_root = Path(executor_input["outputs"]["outputFile"]).parent
        make_writable(task_root)
        extra = tracking_mounts(task_env)
        for folder in extra:
            make_writable(Path(folder))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "ab") as out:
            out.write(
                f"===== {task.name} attempt {attempt} in {task.container.image}: "
                f"{' '.join(argv)}\n".encode()
            )
            out.flush()
            try:
                container = self.client.containers.create(
                    task.container.image,
                    entrypoint=argv.entrypoint,
                    command=argv.cmd,
                    environment=task_env,
                    volumes=volumes_for(executor_input, extra),
                    network_mode=self.network,
                    labels={LABEL: task_env.get("PIPELINE_RUN_ID", ""), "task": task.name},
                )
            except ImageNotFound:
                return executor.AttemptResult(
                    False, None, f"image {task.container.image} not present; run `make images`"
                )
            except APIError as exc:
                return executor.AttemptResult(False, None, f"docker: {exc.explanation}")
            handle = ContainerHandle(container)
            if on_start is not None:
                try:
                    on_start(handle)
                except Exception as exc:  # the run is being interrupted
                    with contextlib.suppress(Exception):
                        container.remove(force=True)
                    return executor.AttemptResult(False, None, str(exc))
            if procs is not None:
                procs[task.name] = handle
            timer = None
            timed_out = threading.Event()
            if timeout_s:

                def expire() -> None:
                    timed_out.set()
                    handle.kill()

                timer = threading.Timer(timeout_s, expire)
                timer.daemon = True
            try:
                container.start()
                if timer is not None:
                    timer.start()
                for chunk in container.logs(stream=True, follow=True):
                    out.write(chunk)
                    out.flush()
                code = int(container.wait().get("StatusCode", -1))
            finally:
                if timer is not None:
                    timer.cancel()
                if procs is not None:
                    procs.pop(task.name, None)
                with contextlib.suppress(Exception):
                    container.remove(force=True)
        duration = time.monotonic() - started
        if timed_out.is_set():
            return executor.AttemptResult(False, None, f"timed out after {timeout_s:g}s", duration)
        return executor.check_attempt(task, executor_input, code, duration)
