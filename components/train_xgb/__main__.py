"""CLI of ``train-xgb``: ``python -m components.train_xgb --in-features F --out-model DIR ...``.

Reads the features table, trains the production booster and the novelty booster
(``logic.train_models``), logs the run to MLflow, then publishes the model folder atomically
and writes the metrics JSON and (under KFP) the executor output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.contracts import tracking
from components.contracts.features import FEATURE_NAMES, FEATURE_VERSION
from components.contracts.settings import Settings
from components.contracts.training import (
    META_FILE,
    TrainingData,
    mlflow_guard,
    prefer_passive_openmp,
    training_data,
    training_main,
    training_parser,
)
from components.train_xgb import logic
from components.train_xgb.spec import SPEC

STAGE = SPEC.name
MODEL_FILE = "xgb.ubj"
NOVELTY_MODEL_FILE = "novelty_xgb.ubj"
META_FORMAT_VERSION = 1

logger = logging.getLogger(STAGE)


def build_parser() -> argparse.ArgumentParser:
    return training_parser(SPEC)


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
        mlflow.log_params(params)
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


@dataclass
class FittedXgb:
    """Both boosters, trained: what ``training.run_training`` publishes."""

    models: logic.XgbModels
    data: TrainingData
    metrics: dict[str, float]
    meta: dict[str, Any]

    def save(self, folder: Path) -> None:
        self.models.production.booster.save_model(str(folder / MODEL_FILE))
        if self.models.novelty is not None:
            self.models.novelty.booster.save_model(str(folder / NOVELTY_MODEL_FILE))

    def log(self, settings: Settings, folder: Path) -> str:
        return log_to_mlflow(settings, folder, self.models, self.data, self.meta, self.metrics)

    def summary(self) -> str:
        p = self.models.production
        return (
            f"best iteration {p.best_iteration}, valid PR-AUC {p.valid_metrics['pr_auc']:.4f}, "
            f"recall@1%FPR {p.valid_metrics['recall_at_1pct_fpr']:.4f}"
        )


def fitter(args: argparse.Namespace):
    """The function that trains both boosters on a features table, for ``args``."""
    params = params_from_args(args)

    def fit(table, source: str) -> FittedXgb:
        data = training_data(table, FEATURE_NAMES, source=source)
        logger.info(
            "training on %d rows (%d fraud), validating on %d rows (%d fraud), %d features",
            data.train.n,
            data.train.positives,
            data.valid.n,
            data.valid.positives,
            len(data.feature_names),
        )
        models = logic.train_models(data, params, args.novel_fraud_type)
        meta = build_meta(models, params, data.feature_names)
        return FittedXgb(models, data, logic.flat_metrics(models), meta)

    return fit


def main(argv: list[str] | None = None) -> int:
    prefer_passive_openmp()
    return training_main(SPEC, fitter, argv)


if __name__ == "__main__":
    sys.exit(main())
