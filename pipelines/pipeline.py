"""The cashier-integrity training pipeline: datagen -> split -> features ->
(train-xgb || train-iforest) -> evaluate -> register.

Every run knob is a pipeline parameter with a default; infrastructure (images, MLflow and S3
locations) comes from settings at compile time. ``build_pipeline`` returns the pipeline
function; ``compile_pipeline`` writes the KFP YAML that Kubeflow and the local runner run.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.components import build_components

PIPELINE_NAME = "cashier-integrity"
PIPELINE_DESCRIPTION = (
    "Retail cashier-integrity (POS fraud) training: synthetic data, time split, point-in-time "
    "features, XGBoost + isolation forest, blended 0-100 risk score, gated MLflow registration."
)
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

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    def cashier_integrity(
        rows: int = 200_000,
        days: int = 28,
        stores: int = 8,
        cashiers_per_store: int = 12,
        fraud_rate: float = 0.02,
        seed: int = 42,
        start_date: str = "2026-01-05",
        chunk_rows: int = 1_000_000,
        live_days: int = 3,
        valid_days: int = 4,
        test_days: int = 5,
        xgb_n_estimators: int = 400,
        xgb_max_depth: int = 6,
        xgb_learning_rate: float = 0.08,
        xgb_subsample: float = 0.9,
        xgb_colsample_bytree: float = 0.8,
        xgb_min_child_weight: float = 1.0,
        xgb_early_stopping_rounds: int = 30,
        novel_fraud_type: str = "scan_avoidance",
        iforest_n_estimators: int = 200,
        iforest_max_samples: int = 512,
        high_precision_target: float = 0.8,
        medium_recall_target: float = 0.95,
        min_pr_auc: float = 0.5,
        min_recall_at_1pct_fpr: float = 0.6,
        max_regression: float = 0.02,
        fail_on_reject: bool = False,
    ):
        """Train, evaluate and register the cashier-integrity risk model.

        Args:
            rows: Number of synthetic transactions.
            days: Days the transactions span.
            stores: Number of stores.
            cashiers_per_store: Cashiers per store.
            fraud_rate: Fraction of fraudulent transactions.
            seed: Seed of the data generator and both models.
            start_date: First day of the generated period (YYYY-MM-DD).
            chunk_rows: Rows generated per chunk (bounds datagen memory).
            live_days: Final days held out as the live stream.
            valid_days: Validation days.
            test_days: Offline test days.
            xgb_n_estimators: XGBoost maximum boosting rounds.
            xgb_max_depth: XGBoost maximum tree depth.
            xgb_learning_rate: XGBoost learning rate.
            xgb_subsample: XGBoost row subsample ratio.
            xgb_colsample_bytree: XGBoost feature subsample ratio.
            xgb_min_child_weight: XGBoost minimum child weight.
            xgb_early_stopping_rounds: XGBoost early-stopping patience.
            novel_fraud_type: Fraud type withheld from the novelty booster.
            iforest_n_estimators: Isolation forest tree count.
            iforest_max_samples: Isolation forest rows per tree.
            high_precision_target: Precision target of the High Risk threshold.
            medium_recall_target: Recall target of the Medium Risk threshold.
            min_pr_auc: Gate: minimum test PR-AUC to become champion.
            min_recall_at_1pct_fpr: Gate: minimum recall at 1% FPR.
            max_regression: Gate: largest PR-AUC drop allowed against the champion.
            fail_on_reject: Fail the run when the quality gate rejects the new model.
        """
        data = configure(
            comps["datagen"](
                rows=rows,
                days=days,
                stores=stores,
                cashiers_per_store=cashiers_per_store,
                fraud_rate=fraud_rate,
                seed=seed,
                start_date=start_date,
                chunk_rows=chunk_rows,
            ),
            "datagen",
        )
        cut = configure(
            comps["split"](
                transactions=data.outputs["transactions"],
                live_days=live_days,
                valid_days=valid_days,
                test_days=test_days,
            ),
            "split",
        )
        feats = configure(
            comps["features"](
                historic=cut.outputs["historic"], time_splits=cut.outputs["time_splits"]
            ),
            "features",
        )
        xgb = configure(
            comps["train_xgb"](
                features=feats.outputs["features"],
                n_estimators=xgb_n_estimators,
                max_depth=xgb_max_depth,
                learning_rate=xgb_learning_rate,
                subsample=xgb_subsample,
                colsample_bytree=xgb_colsample_bytree,
                min_child_weight=xgb_min_child_weight,
                early_stopping_rounds=xgb_early_stopping_rounds,
                novel_fraud_type=novel_fraud_type,
                seed=seed,
            ),
            "train_xgb",
        )
        forest = configure(
            comps["train_iforest"](
                features=feats.outputs["features"],
                n_estimators=iforest_n_estimators,
                max_samples=iforest_max_samples,
                seed=seed,
            ),
            "train_iforest",
        )
        evaluation = configure(
            comps["evaluate"](
                features=feats.outputs["features"],
                xgb_model=xgb.outputs["model"],
                iforest_model=forest.outputs["model"],
                high_precision_target=high_precision_target,
                medium_recall_target=medium_recall_target,
            ),
            "evaluate",
        )
        configure(
            comps["register"](
                xgb_model=xgb.outputs["model"],
                iforest_model=forest.outputs["model"],
                evaluation=evaluation.outputs["evaluation"],
                profiles=feats.outputs["profiles"],
                min_pr_auc=min_pr_auc,
                min_recall_at_1pct_fpr=min_recall_at_1pct_fpr,
                max_regression=max_regression,
                fail_on_reject=fail_on_reject,
            ),
            "register",
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
