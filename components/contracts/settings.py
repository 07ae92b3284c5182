"""One settings object for infrastructure: where data, artifacts and models live.

Run knobs (row counts, seeds, hyperparameters, gate thresholds) are stage/pipeline
parameters, not settings. Settings come from environment variables only, read when
``Settings.from_env()`` is called (never at import time). Standard variable names are used
where one exists (``MLFLOW_TRACKING_URI``, ``AWS_*``), so the usual tooling agrees with us.

Embedded defaults need no server: a local ``var/`` folder for the pipeline root and a SQLite
MLflow store with a local artifact folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from components.contracts.schemas import InputError


def _env(
    name: str, default: str | None = None, *alts: str, environ: Mapping[str, str] | None = None
) -> str | None:
    environ = os.environ if environ is None else environ
    for key in (name, *alts):
        value = environ.get(key)
        if value not in (None, ""):
            return value
    return default


DEFAULT_SERVICE_TIMEOUT_S = 30.0
"""Default of ``SERVICE_TIMEOUT_S`` (seconds)."""


def _service_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``SERVICE_TIMEOUT_S`` from the environment (default 30 s); must be a positive number."""
    raw = _env("SERVICE_TIMEOUT_S", environ=environ)
    if raw is None:
        return DEFAULT_SERVICE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(f"SERVICE_TIMEOUT_S={raw!r}: expected a positive number of seconds")
    return value


def mlflow_retry_env(budget_s: float) -> dict[str, str]:
    """MLflow client variables that keep one failing request's retries within ``budget_s``.

    MLflow's defaults (7 retries, back-off factor 2, 120 s timeout) spend minutes on a server
    that is down. urllib3 sleeps 0, 2f, 4f, 8f ... s between attempts (plus up to
    ``jitter`` s each); with factor 1 and jitter 0.5 the largest retry count whose sleeps fit
    in ``budget_s`` is chosen (4 for 30 s: at most 16 s), and each request times out after
    ``budget_s``. Variables the user set explicitly win (see ``tracking.bound_retries``).
    """
    jitter, retries, slept = 0.5, 0, 0.0
    while retries < 10:
        nxt = (0.0 if retries == 0 else 2.0**retries) + jitter
        if slept + nxt > budget_s:
            break
        slept += nxt
        retries += 1
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(jitter),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(budget_s))),
    }


@dataclass(frozen=True, kw_only=True)
class S3Settings:
    """How to reach an S3 API (AWS itself, MinIO, or moto's server in tests)."""

    endpoint_url: str | None = None
    """S3 endpoint, e.g. ``http://127.0.0.1:9000`` for MinIO; None means AWS itself."""
    region: str = "us-east-1"
    """AWS region of the bucket."""
    access_key_id: str | None = field(default=None, repr=False)
    """Access key; None lets the AWS default credential chain decide."""
    secret_access_key: str | None = field(default=None, repr=False)
    """Secret key; None lets the AWS default credential chain decide."""
    session_token: str | None = field(default=None, repr=False)
    """Session token for temporary credentials."""
    service_timeout_s: float = DEFAULT_SERVICE_TIMEOUT_S
    """``SERVICE_TIMEOUT_S``: bounds each S3 call, retries included (``storage.s3_budget``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        e = {"environ": environ}
        return cls(
            endpoint_url=_env(
                "S3_ENDPOINT_URL", None, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", **e
            ),
            region=_env("AWS_REGION", "us-east-1", "AWS_DEFAULT_REGION", **e) or "us-east-1",
            access_key_id=_env("AWS_ACCESS_KEY_ID", **e),
            secret_access_key=_env("AWS_SECRET_ACCESS_KEY", **e),
            session_token=_env("AWS_SESSION_TOKEN", **e),
            service_timeout_s=_service_timeout_from_env(environ),
        )


@dataclass(frozen=True, kw_only=True)
class MlflowSettings:
    """Where runs are tracked and models registered."""

    tracking_uri: str
    """MLflow tracking URI: ``sqlite:///...`` (embedded default) or ``http://host:5000``."""
    artifact_location: str
    """Artifact root for the experiment (local folder URI or ``s3://bucket/prefix``)."""
    experiment: str = "cashier-integrity"
    """Experiment that every pipeline run logs to."""
    model_name: str = "cashier-integrity-risk"
    """Registered model name of the serving bundle."""
    champion_alias: str = "champion"
    """Registry alias that marks the production model."""
    service_timeout_s: float = DEFAULT_SERVICE_TIMEOUT_S
    """Copy of ``Settings.service_timeout_s`` for the tracking helpers."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """All infrastructure settings. Build with ``Settings.from_env()``."""

    home: Path
    """Folder for embedded local state (``VAR_DIR``, default ``./var``)."""
    pipeline_root: str
    """Where the local runner puts task artifacts: a folder or ``s3://bucket/prefix``."""
    mlflow: MlflowSettings
    """Tracking and registry."""
    s3: S3Settings
    """S3 endpoint and credentials for every ``s3://`` URI."""
    image_registry: str = "ghcr.io/cashier-integrity"
    """Registry prefix of the component and serving images."""
    image_tag: str = "latest"
    """Tag of the component images the compiled pipeline names."""
    service_timeout_s: float = DEFAULT_SERVICE_TIMEOUT_S
    """``SERVICE_TIMEOUT_S``: the longest a stage waits on an unreachable MLflow server
    (retries and back-off included) before it fails with one line and exit 1; also each
    request's timeout. See ``mlflow_retry_env``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from environment variables (see README "Configuration").

        Args:
            environ: Variables to read instead of ``os.environ`` (e.g. a task's environment).
        """
        e = {"environ": environ}
        home = Path(_env("VAR_DIR", "var", **e) or "var").resolve()
        # FALLBACK_MLFLOW_TRACKING_URI: the cluster's URI from the pipeline's ConfigMap; an
        # MLFLOW_TRACKING_URI injected by Kubeflow's MLflow plugin wins (pipelines/pipeline.py).
        tracking = _env("MLFLOW_TRACKING_URI", None, "FALLBACK_MLFLOW_TRACKING_URI", **e) or (
            f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        )
        timeout = _service_timeout_from_env(environ)
        artifacts = (
            _env("MLFLOW_ARTIFACT_LOCATION", **e) or (home / "mlflow" / "artifacts").as_uri()
        )
        return cls(
            home=home,
            pipeline_root=_env("PIPELINE_ROOT", **e) or str(home / "pipeline-root"),
            mlflow=MlflowSettings(
                tracking_uri=tracking,
                artifact_location=artifacts,
                experiment=_env("MLFLOW_EXPERIMENT_NAME", "cashier-integrity", **e) or "",
                model_name=_env("MODEL_NAME", "cashier-integrity-risk", **e) or "",
                champion_alias=_env("CHAMPION_ALIAS", "champion", **e) or "",
                service_timeout_s=timeout,
            ),
            s3=S3Settings.from_env(environ),
            image_registry=_env("IMAGE_REGISTRY", "ghcr.io/cashier-integrity", **e) or "",
            image_tag=_env("IMAGE_TAG", "latest", **e) or "",
            service_timeout_s=timeout,
        )

    def result_settings(self) -> dict[str, str | None]:
        """The settings that change what a task writes outside its output artifacts.

        Every MLflow field (where runs, artifacts and models go, under which names) plus the
        S3 endpoint and region that ``s3://`` artifact locations resolve against; the local
        runner puts them in the cache key of every task that talks to MLflow. Credentials
        (same objects, other identity) and local folders (the pipeline root keys its own
        cache) are not part of it.
        """
        return {
            **{
                f"mlflow.{k}": v
                for k, v in asdict(self.mlflow).items()
                if k != "service_timeout_s"  # how long to wait, not where results go
            },
            "s3.endpoint_url": self.s3.endpoint_url,
            "s3.region": self.s3.region,
        }

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with top-level fields replaced (CLI flags win over env vars)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
