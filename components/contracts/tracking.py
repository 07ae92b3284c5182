"""MLflow glue shared by the stages: one experiment, one run per stage per pipeline run.

Run identity (``stage_run``, ``pipeline_run_id``), read from the environment:

- Kubeflow with its MLflow integration on (KEP-12862): the driver creates a nested MLflow run
  per task and injects ``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_ID``
  into the task's container (kubeflow/pipelines
  ``backend/src/v2/common/plugins/mlflow/handler.go``, ``RetrieveUserContainerEnvVars``); the
  launcher later logs KFP's input parameters and scalar metrics into that run and sets its
  final status (``OnTaskEnd``). The stage logs into that very run, as the plugin intends (the
  KEP: "``MLFLOW_RUN_ID`` points to the task's nested run"), in the plugin's experiment.
- Otherwise the stage starts its own run in ``MLFLOW_EXPERIMENT_NAME``.

Every stage run is tagged ``stage`` and ``pipeline_run_id``, so a pipeline run's stages can be
compared side by side (filter ``tags.pipeline_run_id = '...'``). ``pipeline_run_id`` is, in
order: the stage's ``--pipeline-run-id`` flag (passed to ``stage_run``, never written into
the environment), ``PIPELINE_RUN_ID`` (the local runner sets it in each task's environment
to its run id), the Argo workflow name read from ``KFP_POD_NAME`` (the backend sets that on
every executor pod, ``backend/src/v2/compiler/argocompiler/common.go`` ``commonEnvs``), else
``standalone``. KFP's run-level placeholders (``{{$.pipeline_job_uuid}}``) are not used: the
backend leaves them literal in container args.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from components.contracts.process import alive, start_time
from components.contracts.settings import MlflowSettings

if TYPE_CHECKING:
    import mlflow

logger = logging.getLogger(__name__)


def configure(cfg: MlflowSettings) -> str:
    """Point MLflow at the tracking/registry store and make sure the experiment exists.

    The experiment is created with ``cfg.artifact_location`` explicitly, so artifacts of a
    SQLite-backed store land in our folder (or S3 prefix), not in ``./mlruns``.

    Returns:
        The experiment id.
    """
    import mlflow

    bound_retries(cfg.service_timeout_s)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    with _sqlite_schema_lock(cfg.tracking_uri):
        # The first client of a fresh SQLite store creates its schema (alembic migrations);
        # two stages doing that at once (train-xgb || train-iforest) collide, so the schema
        # set-up and the experiment creation are serialized across processes.
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(
                    cfg.experiment, artifact_location=cfg.artifact_location
                )
            except mlflow.exceptions.MlflowException:
                # Another process (e.g. against a tracking server) created it first.
                experiment = client.get_experiment_by_name(cfg.experiment)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def _sqlite_schema_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive file lock beside a local SQLite store; no-op for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = os.path.abspath(tracking_uri.removeprefix("sqlite:///"))
    os.makedirs(os.path.dirname(db), exist_ok=True)
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Argo names a pod <workflow>-<template>-<fnv32 of the node name> (POD_NAMES=v2, the default)
# or <workflow>-<hash> (v1); KFP's executor template is
# (metadata-<n>-<m>-)?(retry-)?system-container-impl (kubeflow/pipelines
# backend/src/v2/compiler/argocompiler/container.go, addContainerExecutorTemplate).
_ARGO_POD_SUFFIX = re.compile(r"(?:-(?:metadata-\d+-\d+-)?(?:retry-)?system-container-impl)?-\d+$")
STANDALONE = "standalone"


def workflow_name(pod_name: str) -> str | None:
    """The Argo workflow (= KFP run) name of a KFP executor pod, or None if the name does not
    have that shape."""
    match = _ARGO_POD_SUFFIX.search(pod_name)
    return pod_name[: match.start()] if match and match.start() > 0 else None


def _given(value: str | None) -> str | None:
    """``value`` unless empty or an unresolved KFP placeholder (``{{$...}}``)."""
    return value if value and not value.startswith("{{") else None


def pipeline_run_id(env: Mapping[str, str], given: str | None = None) -> str:
    """The id a stage's MLflow runs are tagged with: ``given`` (the ``--pipeline-run-id``
    flag) when set and not an unresolved placeholder, else as the module docstring says."""
    return (
        _given(given)
        or _given(env.get("PIPELINE_RUN_ID"))
        or workflow_name(env.get("KFP_POD_NAME", ""))
        or STANDALONE
    )


def task_run_id(env: Mapping[str, str]) -> str | None:
    """The MLflow run Kubeflow's MLflow plugin created for this task (``MLFLOW_RUN_ID``)."""
    return _given(env.get("MLFLOW_RUN_ID"))


def run_tags(stage: str, env: Mapping[str, str], given: str | None = None) -> dict[str, str]:
    """Tags of a stage's MLflow run: the stage, the pipeline run, and the pod when on KFP."""
    tags = {"stage": stage, "pipeline_run_id": pipeline_run_id(env, given)}
    if pod := env.get("KFP_POD_NAME"):
        tags["kfp_pod_name"] = pod
    return tags


def add_pipeline_run_id_arg(parser: argparse.ArgumentParser) -> None:
    """The ``--pipeline-run-id`` flag of every stage CLI that logs to MLflow."""
    parser.add_argument(
        "--pipeline-run-id",
        default="",
        help="tag MLflow runs with this pipeline run id, for stand-alone use (default: "
        "$PIPELINE_RUN_ID, else the workflow name from $KFP_POD_NAME, else 'standalone')",
    )


@contextlib.contextmanager
def stage_run(
    cfg: MlflowSettings, stage: str, *, pipeline_run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """The MLflow run one stage logs into, tagged ``run_tags`` and this process.

    ``pipeline_run_id`` is the stage's ``--pipeline-run-id`` flag (None: from the environment).

    Under Kubeflow's MLflow plugin that is the task's nested run (``MLFLOW_RUN_ID``): it is
    entered by id, without ``set_experiment`` (MLflow refuses a run outside the active
    experiment) and without a new name (the plugin named it after the task). Otherwise a new
    run named after the stage in ``cfg.experiment``; before it starts, runs of the same stage
    left RUNNING by a killed process are ended KILLED (``reap_stale_runs``). The run ends
    FINISHED, FAILED on an exception, or KILLED when the stage is stopped (SIGTERM /
    Ctrl-C), see ``ended_with_status``.
    """
    import mlflow

    tags = {**run_tags(stage, os.environ, pipeline_run_id), PROCESS_TAG: process_id()}
    run_id = task_run_id(os.environ)
    if run_id:
        bound_retries(cfg.service_timeout_s)
        mlflow.set_tracking_uri(cfg.tracking_uri)
        mlflow.set_registry_uri(cfg.tracking_uri)
        with mlflow.start_run(run_id=run_id, tags=tags) as run, ended_with_status(run):
            yield run
        return
    experiment_id = configure(cfg)
    reap_stale_runs(experiment_id, stage, tags["pipeline_run_id"])
    with mlflow.start_run(run_name=stage, tags=tags) as run, ended_with_status(run):
        yield run


def log_params(
    params: Mapping[str, object],
    *,
    executor_input: str | None = None,
    kfp_inputs: Iterable[str] = (),
) -> dict:
    """Log ``params`` into the active run, minus those Kubeflow logs there itself.

    Under Kubeflow's MLflow plugin (``MLFLOW_RUN_ID``) the launcher logs the task's KFP input
    parameters into the same run when the task ends (``OnTaskEnd``: one ``LogBatch`` of
    ``metadata.FormatExecutionParameters``, values JSON-encoded, so ``"scan_avoidance"``
    with its quotes and ``1`` for ``1.0``). MLflow refuses a param logged again with another
    value, and that refusal drops the launcher's whole batch (its metrics and tags too). So
    there the task's input parameters, read from the executor input ``{{$}}``
    (``inputs.parameterValues``: the values the launcher logs), or named by ``kfp_inputs``
    (the component's input parameters, for a stage without ``{{$}}``), are left to
    Kubeflow. Elsewhere every param is logged. Returns what was logged.
    """
    import mlflow

    from components.contracts.kfp_io import input_parameters

    kfp_logs = (
        {*input_parameters(executor_input), *kfp_inputs} if task_run_id(os.environ) else set()
    )
    mine = {k: v for k, v in params.items() if k not in kfp_logs}
    mlflow.log_params(mine)
    return mine


# ---------------------------------------------------------------- failures and kills

PROCESS_TAG = "process"
"""Run tag ``<host>:<pid>:<start ticks>`` of the process that runs the stage: lets the next
run on the same host tell a killed run (process gone) from a live one."""


def bound_retries(budget_s: float) -> None:
    """Bound MLflow's HTTP retries by ``budget_s`` (``settings.mlflow_retry_env``).

    Variables already set in the environment win (an operator's explicit choice).
    """
    from components.contracts.settings import mlflow_retry_env

    for key, value in mlflow_retry_env(budget_s).items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def quick_calls(timeout_s: int = 5) -> Iterator[None]:
    """MLflow calls in the block make one attempt with a short timeout (clean-up paths: a
    stage that is failing or being stopped must not spend its grace period on retries)."""
    keys = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({keys[0]: "0", keys[1]: str(timeout_s)})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def ended_with_status(run: mlflow.ActiveRun) -> Iterator[None]:
    """End ``run`` KILLED when the block is stopped (SIGTERM, Ctrl-C), FAILED on an error.

    Ending is attempted once with a short timeout; if MLflow itself is what failed, the run
    stays RUNNING and the next run of the stage reaps it.
    """
    import mlflow

    from components.contracts.cli import Terminated

    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, Terminated | KeyboardInterrupt) else "FAILED"
        with quick_calls(), contextlib.suppress(Exception):
            mlflow.end_run(status)
        raise


def process_id() -> str:
    """``<host>:<pid>:<start ticks>`` of this process (the ``PROCESS_TAG`` value)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_time(pid)}"


def _process_gone(tag: str) -> bool:
    """True when ``tag`` names a process on this host that no longer runs."""
    host, _, rest = tag.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    return not alive(int(pid_text), ticks or None)


def reap_stale_runs(experiment_id: str, stage: str, pipeline_run_id: str) -> list[str]:
    """End KILLED the RUNNING runs of ``stage`` whose process is gone (SIGKILL, OOM).

    A run is stale when its process (``PROCESS_TAG``) ran on this host and is gone, or when
    it belongs to the same (non-standalone) pipeline run: a stage of a pipeline run starts
    again only after its previous attempt died. Returns the reaped run ids. Best effort:
    MLflow errors are logged, never raised.
    """
    import mlflow

    reaped: list[str] = []
    try:
        client = mlflow.MlflowClient()
        runs = client.search_runs(
            [experiment_id],
            f"tags.stage = '{stage}' and attributes.status = 'RUNNING'",
            max_results=200,
        )
        for run in runs:
            tags = run.data.tags
            same_pipeline = (
                pipeline_run_id != "standalone" and tags.get("pipeline_run_id") == pipeline_run_id
            )
            if same_pipeline or _process_gone(tags.get(PROCESS_TAG, "")):
                client.set_tag(
                    run.info.run_id, "killed_reason", "process gone; reaped by the next run"
                )
                client.set_terminated(run.info.run_id, "KILLED")
                reaped.append(run.info.run_id)
    except Exception as exc:  # reaping must never fail the stage
        logger.warning("could not check for stale %s runs: %s", stage, exc)
    if reaped:
        logger.warning("marked %d stale %s run(s) KILLED: %s", len(reaped), stage, reaped)
    return reaped
