"""CLI of ``train-xgb``: ``python -m components.train_xgb --in-features F --out-model DIR ...``.

Reads the features table, trains the production booster and the novelty booster
(``logic.train_models``), logs the run to MLflow, then publishes the model folder atomically
and writes the metrics JSON and (under KFP) the executor output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from components.contracts import cli, storage, tracking
from components.contracts.features import FEATURE_NAMES, FEATURE_VERSION
from components.contracts.schemas import FRAUD_TYPES
from components.contracts.settings import Settings
from components.contracts.training import (
    MlflowLoggingError,
    TrainingData,
    add_training_io_args,
    mlflow_guard,
    prefer_passive_openmp,
    publish_metrics,
    training_data,
)
from components.train_xgb import logic

STAGE = "train-xgb"
MODEL_FILE = "xgb.ubj"
NOVELTY_MODEL_FILE = "novelty_xgb.ubj"
META_FILE = "meta.json"
META_FORMAT_VERSION = 1

logger = logging.getLogger(STAGE)


def build_parser() -> argparse.ArgumentParser:
    d = logic.XgbParams()
    p = cli.ArgumentParser(
        stage=STAGE,
        prog="python -m components.train_xgb",
        description="Train the supervised XGBoost fraud classifier (production + novelty "
        "boosters) on the features table's train subset, early stopping on its valid subset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_io_args(p, f"{MODEL_FILE}, {NOVELTY_MODEL_FILE}, {META_FILE}")
    hp = p.add_argument_group("hyperparameters")
    hp.add_argument("--n-estimators", type=int, default=d.n_estimators, help="max boosting rounds")
    hp.add_argument("--max-depth", type=int, default=d.max_depth, help="max tree depth")
    hp.add_argument("--learning-rate", type=float, default=d.learning_rate, help="eta")
    hp.add_argument("--subsample", type=float, default=d.subsample, help="row subsample per tree")
    hp.add_argument(
        "--colsample-bytree",
        type=float,
        default=d.colsample_bytree,
        help="feature subsample per tree",
    )
    hp.add_argument(
        "--min-child-weight",
        type=float,
        default=d.min_child_weight,
        help="min sum of instance weight in a child",
    )
    hp.add_argument(
        "--early-stopping-rounds",
        type=int,
        default=d.early_stopping_rounds,
        help="stop when valid PR-AUC has not improved for this many rounds (0 = never)",
    )
    hp.add_argument(
        "--scale-pos-weight",
        type=float,
        default=None,
        help="weight of fraud rows; default: negatives / positives of the training rows",
    )
    hp.add_argument(
        "--novel-fraud-type",
        default="scan_avoidance",
        choices=FRAUD_TYPES,
        help="fraud type withheld from the novelty booster; 'none' = no novelty booster",
    )
    hp.add_argument("--seed", type=int, default=d.seed, help="random seed")
    hp.add_argument(
        "--nthread", type=int, default=0, help="XGBoost threads; 0 = every CPU available"
    )
    tracking.add_pipeline_run_id_arg(p)
    return p


def params_from_args(args: argparse.Namespace) -> logic.XgbParams:
    return logic.XgbParams(
        n_estimators=args.n_estimators,
        max_depth=args.max_depth,
        learning_rate=args.learning_rate,
        subsample=args.subsample,
        colsample_bytree=args.colsample_bytree,
        min_child_weight=args.min_child_weight,
        early_stopping_rounds=args.early_stopping_rounds,
        seed=args.seed,
        scale_pos_weight=args.scale_pos_weight,
        **({"nthread": args.nthread} if args.nthread > 0 else {}),
    )


def build_meta(
    models: logic.XgbModels, params: logic.XgbParams, feature_names: tuple[str, ...]
) -> dict[str, Any]:
    """Content of ``meta.json``."""
    import xgboost

    meta: dict[str, Any] = {
        "format_version": META_FORMAT_VERSION,
        "stage": STAGE,
        "model_file": MODEL_FILE,
        "xgboost_version": xgboost.__version__,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(feature_names),
        "params": params.as_dict(),
        "booster_params": logic.booster_params(params, models.production.scale_pos_weight),
        "best_iteration": models.production.best_iteration,
        **{k: v for k, v in models.production.summary().items() if k != "best_iteration"},
        "novel_fraud_type": models.novel_fraud_type,
        "novelty": None,
    }
    if models.novelty is not None:
        meta["novelty"] = {
            "model_file": NOVELTY_MODEL_FILE,
            "dropped_rows": models.dropped_rows,
            **models.novelty.summary(),
        }
    return meta


def log_to_mlflow(
    settings: Settings,
    staging: Path,
    models: logic.XgbModels,
    data: TrainingData,
    meta: dict[str, Any],
    metrics: dict[str, float],
    executor_input: str | None = None,
) -> str:
    """Log params, metrics and the models to one MLflow run; returns the run id.

    Raises:
        MlflowLoggingError: Anything went wrong talking to MLflow.
    """
    import mlflow
    import mlflow.xgboost
    import pandas as pd
    import xgboost
    from mlflow.models import infer_signature

    uri = settings.mlflow.tracking_uri
    with (
        mlflow_guard("logging of train-xgb", uri),
        tracking.stage_run(settings.mlflow, STAGE) as run,
    ):
        params = {
            **meta["params"],
            "novel_fraud_type": models.novel_fraud_type,
            "effective_scale_pos_weight": models.production.scale_pos_weight,
            "feature_version": FEATURE_VERSION,
            "n_features": len(data.feature_names),
        }
        tracking.log_params(params, executor_input=executor_input)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        example = pd.DataFrame(data.valid.X[:5], columns=list(data.feature_names))
        booster = models.production.booster
        prediction = booster.predict(xgboost.DMatrix(example))
        mlflow.xgboost.log_model(
            booster,
            name="xgb",
            model_format="ubj",
            signature=infer_signature(example, prediction),
            input_example=example,
            pip_requirements=[f"xgboost-cpu=={xgboost.__version__}"],
        )
        if models.novelty is not None:
            mlflow.log_artifact(str(staging / NOVELTY_MODEL_FILE), artifact_path="novelty")
        mlflow.log_dict(meta, META_FILE)
        return run.info.run_id


def run(args: argparse.Namespace) -> dict[str, float]:
    """Run the stage; returns the flat metrics."""
    settings = Settings.from_env()
    params = params_from_args(args)
    table = storage.read_table(args.in_features)
    data = training_data(table, FEATURE_NAMES, source=args.in_features)
    logger.info(
        "training on %d rows (%d fraud), validating on %d rows (%d fraud), %d features",
        data.train.n,
        data.train.positives,
        data.valid.n,
        data.valid.positives,
        len(data.feature_names),
    )
    models = logic.train_models(data, params, args.novel_fraud_type)
    metrics = logic.flat_metrics(models)
    meta = build_meta(models, params, data.feature_names)
    with storage.publish(STAGE) as pub:  # model folder and metrics: one commit
        staging = pub.local_folder(args.out_model)
        models.production.booster.save_model(str(staging / MODEL_FILE))
        if models.novelty is not None:
            models.novelty.booster.save_model(str(staging / NOVELTY_MODEL_FILE))
        meta["mlflow_run_id"] = log_to_mlflow(
            settings, staging, models, data, meta, metrics, args.executor_input
        )
        storage.write_json(meta, str(staging / META_FILE))
        publish_metrics(metrics, args, pub)
    p = models.production
    print(
        f"{STAGE}: best iteration {p.best_iteration}, valid PR-AUC "
        f"{p.valid_metrics['pr_auc']:.4f}, recall@1%FPR "
        f"{p.valid_metrics['recall_at_1pct_fpr']:.4f} -> {args.out_model}"
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    prefer_passive_openmp()
    args = build_parser().parse_args(argv)
    tracking.use_pipeline_run_id(args.pipeline_run_id)
    try:
        return cli.run(STAGE, lambda: run(args))
    except MlflowLoggingError as exc:
        print(f"{STAGE}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
