"""CLI of ``train-xgb``: ``python -m components.train_xgb --in-features F --out-model DIR ...``.

Reads the features table, trains the production booster and the leave-one-type-out fold
boosters (``logic.train_models``), logs the run to MLflow, then publishes the model folder atomically
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
FOLD_FOLDER = "loto"
"""Subfolder of the fold boosters, ``loto/<fraud_type>.ubj``."""


def fold_file(fraud_type: str) -> str:
    """Path (in the model folder) of the fold booster trained without ``fraud_type``."""
    return f"{FOLD_FOLDER}/{fraud_type}.ubj"


logger = logging.getLogger(SPEC.name)
build_parser = functools.partial(training_parser, SPEC)


def params_from_args(args: argparse.Namespace) -> logic.XgbParams:
    kwargs = cli.dataclass_kwargs(args, logic.XgbParams)
    if kwargs["nthread"] <= 0:  # 0: XgbParams' own default, every CPU available
        del kwargs["nthread"]
    return logic.XgbParams(**kwargs)


def build_meta(
    models: logic.XgbModels,
    params: logic.XgbParams,
    fold: logic.FoldParams,
    feature_names: tuple[str, ...],
    augment: logic.AugmentParams | None = None,
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
        "loto_params": fold.as_dict(),
        "augmentation": {
            **(augment.as_dict() if augment else {}),
            "rows_added": {"masked": models.masked_copies, "evidence": models.evidence_copies},
        },
        "loto": {
            name: {
                "model_file": fold_file(name),
                "dropped_rows": models.dropped_rows[name],
                **booster.summary(),
            }
            for name, booster in models.folds.items()
        },
    }
    return meta


@dataclass
class FittedXgb(Fitted):
    """Both boosters, trained: what ``training.run_training`` publishes."""

    models: logic.XgbModels

    def mlflow_params(self) -> dict[str, Any]:
        return {
            **super().mlflow_params(),
            **self.meta["loto_params"],
            **{k: v for k, v in self.meta["augmentation"].items() if k != "rows_added"},
            "effective_scale_pos_weight": self.models.production.scale_pos_weight,
        }

    def save(self, folder: Path) -> None:
        self.models.production.booster.save_model(str(folder / MODEL_FILE))
        if self.models.folds:
            (folder / FOLD_FOLDER).mkdir(exist_ok=True)
        for name, booster in self.models.folds.items():
            booster.booster.save_model(str(folder / fold_file(name)))

    def log_models(self, folder: Path) -> None:
        """The production booster as an MLflow xgboost model; the fold boosters as files."""
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
        if self.models.folds:
            mlflow.log_artifacts(str(folder / FOLD_FOLDER), artifact_path=FOLD_FOLDER)

    def summary(self) -> str:
        p = self.models.production
        return (
            f"best iteration {p.best_iteration}, valid PR-AUC {p.valid_metrics['pr_auc']:.4f}, "
            f"recall@1%FPR {p.valid_metrics['recall_at_1pct_fpr']:.4f}"
        )


def fitter(args: argparse.Namespace):
    """The function that trains both boosters on a features table, for ``args``."""
    params = params_from_args(args)
    fold = logic.FoldParams(**cli.dataclass_kwargs(args, logic.FoldParams))
    augment = logic.AugmentParams(**cli.dataclass_kwargs(args, logic.AugmentParams))

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
        models = logic.train_models(data, params, fold, augment)
        meta = build_meta(models, params, fold, data.feature_names, augment)
        return FittedXgb(data, logic.flat_metrics(models), meta, models)

    return fit


def main(argv: list[str] | None = None) -> int:
    prefer_passive_openmp()
    return training_main(SPEC, fitter, argv)


if __name__ == "__main__":
    sys.exit(main())
