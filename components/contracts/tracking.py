"""MLflow glue shared by the stages: one experiment, one run per stage per pipeline run.

Every stage run is tagged ``pipeline_run_id`` and ``stage``, so a pipeline run's stages can
be compared side by side in the MLflow UI (filter ``tags.pipeline_run_id = '...'``). The
compiled pipeline passes KFP's job id (``--pipeline-run-id {{$.pipeline_job_uuid}}``), which
Kubeflow and the local runner both resolve (the runner to its own run id, which it also sets
as ``PIPELINE_RUN_ID``); a stage run by hand is tagged ``PIPELINE_RUN_ID`` or ``standalone``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from components.contracts.settings import MlflowSettings

if TYPE_CHECKING:
    import mlflow


def configure(cfg: MlflowSettings) -> str:
    """Point MLflow at the tracking/registry store and make sure the experiment exists.

    The experiment is created with ``cfg.artifact_location`` explicitly, so artifacts of a
    SQLite-backed store land in our folder (or S3 prefix), not in ``./mlruns``.

    Returns:
        The experiment id.
    """
    import mlflow

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


def add_pipeline_run_id_arg(parser: argparse.ArgumentParser) -> None:
    """The ``--pipeline-run-id`` flag of every stage CLI that logs to MLflow."""
    parser.add_argument(
        "--pipeline-run-id",
        default="",
        help="tag MLflow runs with this pipeline run id (the compiled pipeline passes KFP's "
        "job id; default: $PIPELINE_RUN_ID, else 'standalone')",
    )


def use_pipeline_run_id(value: str | None) -> None:
    """Make ``value`` the id this process's stage runs are tagged with, when one was given.

    An unresolved KFP placeholder (``{{$...}}``, a runner that does not resolve it) is ignored.
    """
    if value and not value.startswith("{{"):
        os.environ["PIPELINE_RUN_ID"] = value


@contextlib.contextmanager
def stage_run(
    cfg: MlflowSettings, stage: str, pipeline_run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run for one stage, tagged with the stage and the pipeline run id."""
    import mlflow

    configure(cfg)
    pipeline_run_id = pipeline_run_id or os.environ.get("PIPELINE_RUN_ID") or "standalone"
    with mlflow.start_run(
        run_name=f"{stage}",
        tags={"stage": stage, "pipeline_run_id": pipeline_run_id},
    ) as run:
        yield run
