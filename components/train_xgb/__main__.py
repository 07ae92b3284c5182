"""CLI of ``train-xgb``: ``python -m components.train_xgb --in-features F --out-model DIR ...``.

Reads the features table, trains the production booster and the novelty booster
(``logic.train_models``), logs the run to MLflow, then publishes the model folder atomically
and writes the metrics JSON and (under KFP) the executor output.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.contracts import cli
from components.contracts.features import FEATURE_NAMES
from components.contracts.training import (
    Fitted,
    meta_header,
    prefer_passive_openmp,
    training_data,
    training_main,
    training_parser,
)
from components.train_xgb import logic
from components.train_xgb.spec import SPEC

MODEL_FILE = "xgb.ubj"
NOVELTY_MODEL_FILE = "novelty_xgb.ubj"

logger = logging.getLogger(SPEC.name)
build_parser = functools.partial(training_parser, SPEC)


def params_from_args(args: argparse.Namespace) -> logic.XgbParams:
    kwargs = cli.dataclass_kwargs(args, logic.XgbParams)
    if kwargs["nthread"] <= 0:  # 0: XgbParams' own default, every CPU available
        del kwargs["nthread"]
    return logic.XgbParams(**kwargs)


def build_meta(
    models: logic.XgbModels, params: logic.XgbParams, feature_names: tuple[str, ...]
) -> dict[str, Any]:
    """Content of ``meta.json``."""
    import xgboost

    meta: dict[str, Any] = {
        **meta_header(SPEC, params, feature_names),
        "model_file": MODEL_FILE,
        "xgboost_version": xgboost.__version__,
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


@dataclass
class FittedXgb(Fitted):
    """Both boosters, trained: what ``training.run_training`` publishes."""

    models: logic.XgbModels

    def mlflow_params(self) -> dict[str, Any]:
        return {
            **super().mlflow_params(),
            "novel_fraud_type": self.models.novel_fraud_type,
            "effective_scale_pos_weight": self.models.production.scale_pos_weight,
        }

    def save(self, folder: Path) -> None:
        self.models.production.booster.save_model(str(folder / MODEL_FILE))
        if self.models.novelty is not None:
            self.models.novelty.booster.save_model(str(folder / NOVELTY_MODEL_FILE))

    def log_models(self, folder: Path) -> None:
        """The production booster as an MLflow xgboost model; the novelty booster as a file."""
        import mlflow
        import mlflow.xgboost
        import pandas as pd
        import xgboost
        from mlflow.models import infer_signature

        example = pd.DataFrame(self.data.valid.X[:5], columns=list(self.data.feature_names))
        booster = self.models.production.booster
        mlflow.xgboost.log_model(
            booster,
            name="xgb",
            model_format="ubj",
            signature=infer_signature(example, booster.predict(xgboost.DMatrix(example))),
            input_example=example,
            pip_requirements=[f"xgboost-cpu=={xgboost.__version__}"],
        )
        if self.models.novelty is not None:
            mlflow.log_artifact(str(folder / NOVELTY_MODEL_FILE), artifact_path="novelty")

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
        return FittedXgb(data, logic.flat_metrics(models), meta, models)

    return fit


def main(argv: list[str] | None = None) -> int:
    prefer_passive_openmp()
    return training_main(SPEC, fitter, argv)


if __name__ == "__main__":
    sys.exit(main())
