"""The cashier-integrity training pipeline: datagen -> split -> features ->
(train-xgb || train-iforest) -> evaluate -> register.

Every run knob is a pipeline parameter with a default; infrastructure (images, MLflow and S3
locations) comes from settings at compile time. ``build_pipeline`` returns the pipeline
function; ``compile_pipeline`` writes the KFP YAML that Kubeflow and the local runner run.
"""

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from components.contracts.spec import Param
from pipelines.components import STAGES, build_components, stage_spec

PIPELINE_NAME = "cashier-integrity"
PIPELINE_DESCRIPTION = (
    "Retail cashier-integrity (POS fraud) training: synthetic data, time split, point-in-time "
    "features, XGBoost + isolation forest, blended 0-100 risk score, gated MLflow registration."
)
PIPELINE_SUMMARY = "Train, evaluate and register the cashier-integrity risk model."
# A stage's parameter becomes the pipeline parameter <prefix><name>: the training stages'
# knobs are prefixed (both have n_estimators); the seed is one knob for every stage.
PARAM_PREFIX = {"train_xgb": "xgb_", "train_iforest": "iforest_"}
UNPREFIXED = frozenset({"seed"})
SHARED_HELP = {"seed": "Seed of the data generator and both models."}


def pipeline_params() -> dict[str, list[tuple[str, Param]]]:
    """Pipeline parameter name -> the (stage module, stage parameter) pairs it feeds, in
    pipeline order.

    Derived from the stage specs (the defaults are theirs). A parameter several stages
    declare (``seed``) must have one type and default everywhere (``ValueError`` otherwise).
    """
    params: dict[str, list[tuple[str, Param]]] = {}
    for stage in STAGES:
        for p in stage_spec(stage).kfp_params:
            name = p.name if p.name in UNPREFIXED else PARAM_PREFIX.get(stage.module, "") + p.name
            first = params.setdefault(name, [(stage.module, p)])[0][1]
            if first is p:
                continue
            if (first.type, first.default) != (p.type, p.default):
                raise ValueError(f"pipeline parameter {name}: stages disagree on its default")
            params[name].append((stage.module, p))
    return params


# Transient failures (S3 hiccups, a busy MLflow server) deserve a retry; a deterministic bug
# fails twice fast. Register talks to the tracking server, so it gets one more attempt.
RETRIES = {
    "datagen": 1,
    "split": 1,
    "features": 1,
    "train_xgb": 1,
    "train_iforest": 1,
    "evaluate": 1,
    "register": 2,
}
RETRY_BACKOFF = "5s"


@dataclass(frozen=True)
class Resources:
    """Kubernetes CPU/memory requests and limits of one task (Kubernetes quantities)."""

    peak_mib: int
    """Peak RSS of the stage on 1M rows (README "Benchmarks", 2026-11-25), in MiB."""
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


# Sized from the 1M-row stage benchmark: the request covers the peak, so the scheduler
# places the pod where it fits, and the limit leaves >= 1.5x the peak for the KFP launcher
# that wraps the stage in the same container and for variance. The pipeline's default is
# 200k rows; runs well above 1M rows need larger values.
RESOURCES: dict[str, Resources] = {
    "datagen": Resources(539, "500m", "1", "768Mi", "1Gi"),
    "split": Resources(757, "500m", "1", "1Gi", "1536Mi"),
    "features": Resources(509, "1", "2", "768Mi", "1Gi"),
    "train_xgb": Resources(2662, "2", "4", "3Gi", "4Gi"),  # 2.6 GiB
    "train_iforest": Resources(1638, "1", "2", "2Gi", "3Gi"),  # 1.6 GiB
    "evaluate": Resources(2150, "1", "2", "2560Mi", "4Gi"),  # 2.1 GiB
    "register": Resources(410, "250m", "1", "512Mi", "1Gi"),  # 0.4 GiB
}
# Tasks with side effects outside their outputs (register writes the MLflow registry and
# moves the champion alias) are never served from KFP's cache.
NEVER_CACHED = frozenset({"register"})

# Infrastructure settings reach the pods from a ConfigMap and a Secret (kfp-kubernetes);
# apply them in the namespace that runs the pipeline (examples: manifests/kfp/).
CONFIG_MAP = "cashier-integrity-config"
S3_SECRET = "cashier-integrity-s3"
# ConfigMap key -> environment variable. Every key must exist (an empty value means unset),
# so a namespace without the ConfigMap fails at pod creation instead of tracking into a
# throwaway SQLite file inside the pod. The tracking URI goes to FALLBACK_MLFLOW_TRACKING_URI,
# never MLFLOW_TRACKING_URI: Kubeflow's MLflow plugin injects MLFLOW_TRACKING_URI with the
# task's MLFLOW_RUN_ID, and its URI must win (settings read it first); a second env entry of
# the same name in the driver's pod spec patch would collide with the plugin's.
CONFIG_MAP_ENV: dict[str, str] = {
    "MLFLOW_TRACKING_URI": "FALLBACK_MLFLOW_TRACKING_URI",
    "MLFLOW_ARTIFACT_LOCATION": "MLFLOW_ARTIFACT_LOCATION",
    "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
    "S3_ENDPOINT_URL": "S3_ENDPOINT_URL",
    "AWS_REGION": "AWS_REGION",
}
# Secret key -> environment variable. Optional: without the Secret, the AWS default chain
# (IRSA / EKS Pod Identity) supplies credentials.
S3_SECRET_ENV: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}


def build_pipeline(
    image_registry: str,
    image_tag: str,
    task_env: Mapping[str, str] | None = None,
    images: Mapping[str, str] | None = None,
    *,
    config_map: str = CONFIG_MAP,
    s3_secret: str = S3_SECRET,
):
    """Build the pipeline function for the given component images.

    Args:
        image_registry: Registry prefix of the component images.
        image_tag: Tag of the component images.
        task_env: Environment variables set on every task. Empty by default so the
            checked-in YAML holds no machine-specific location; on Kubeflow, locations come
            from ``config_map`` and ``s3_secret``. Do not name a variable the ConfigMap or
            Secret also sets (two env entries of one name in a pod).
        images: Exact per-stage image references (see ``build_components``).
        config_map: Kubernetes ConfigMap with the keys of ``CONFIG_MAP_ENV``.
        s3_secret: Kubernetes Secret with the keys of ``S3_SECRET_ENV`` (optional).
    """
    from kfp import dsl, kubernetes

    comps = build_components(image_registry, image_tag, images)
    env = dict(task_env or {})

    def configure(task, stage: str):
        task.set_retry(
            num_retries=RETRIES[stage], backoff_duration=RETRY_BACKOFF, backoff_factor=2.0
        )
        task.set_caching_options(stage not in NEVER_CACHED)
        res = RESOURCES[stage]
        task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
        task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
        for key, value in sorted(env.items()):
            task.set_env_variable(key, value)
        kubernetes.use_config_map_as_env(task, config_map, CONFIG_MAP_ENV, optional=False)
        kubernetes.use_secret_as_env(task, s3_secret, S3_SECRET_ENV, optional=True)
        return task

    params = pipeline_params()
    names = list(params)

    def cashier_integrity(*values):
        given = dict(zip(names, values, strict=True))

        def task(stage: str, **artifacts):
            knobs = {
                p.name: given[name]
                for name, targets in params.items()
                for module, p in targets
                if module == stage
            }
            return configure(comps[stage](**artifacts, **knobs), stage)

        data = task("datagen")
        cut = task("split", transactions=data.outputs["transactions"])
        feats = task(
            "features", historic=cut.outputs["historic"], time_splits=cut.outputs["time_splits"]
        )
        xgb = task("train_xgb", features=feats.outputs["features"])
        forest = task("train_iforest", features=feats.outputs["features"])
        evaluation = task(
            "evaluate",
            features=feats.outputs["features"],
            xgb_model=xgb.outputs["model"],
            iforest_model=forest.outputs["model"],
        )
        task(
            "register",
            xgb_model=xgb.outputs["model"],
            iforest_model=forest.outputs["model"],
            evaluation=evaluation.outputs["evaluation"],
            profiles=feats.outputs["profiles"],
            features=feats.outputs["features"],
        )

    kw = inspect.Parameter.POSITIONAL_OR_KEYWORD
    first = {name: targets[0][1] for name, targets in params.items()}
    cashier_integrity.__signature__ = inspect.Signature(
        [inspect.Parameter(n, kw, annotation=p.type, default=p.default) for n, p in first.items()]
    )
    cashier_integrity.__doc__ = "\n".join(
        [PIPELINE_SUMMARY, "", "Args:"]
        + [f"    {n}: {SHARED_HELP.get(n, p.help)}" for n, p in first.items()]
    )
    cashier_integrity = dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(
        cashier_integrity
    )
    return cashier_integrity


def compile_pipeline(
    path: str | Path,
    image_registry: str,
    image_tag: str,
    task_env: Mapping[str, str] | None = None,
    images: Mapping[str, str] | None = None,
) -> Path:
    """Compile the pipeline to a KFP IR YAML file at ``path`` (``images``: see
    ``pipelines.components.build_components``)."""
    from kfp import compiler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        build_pipeline(image_registry, image_tag, task_env, images), package_path=str(path)
    )
    return path
