"""CLI of ``train-iforest``: ``python -m components.train_iforest --in-features F --out-model DIR``.

Fits the isolation forest on the train subset's features, saves it as plain arrays
(``forest.npz``, what serving uses) and as ``iforest.skops`` (for sklearn users), logs the
run to MLflow, then publishes the model folder atomically and writes the metrics JSON and
(under KFP) the executor output.
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
from components.contracts.features import ANOMALY_FEATURES, FEATURE_NAMES, FEATURE_VERSION
from components.contracts.forest import FORMAT_VERSION as FOREST_FORMAT_VERSION
from components.contracts.settings import Settings
from components.contracts.training import (
    META_FILE,
    mlflow_guard,
    training_data,
    training_main,
    training_parser,
)
from components.train_iforest import logic
from components.train_iforest.spec import SPEC

STAGE = SPEC.name
FOREST_FILE = "forest.npz"
SKOPS_FILE = "iforest.skops"
META_FORMAT_VERSION = 1

logger = logging.getLogger(STAGE)


def build_parser() -> argparse.ArgumentParser:
    return training_parser(SPEC)


def build_meta(
    forest: logic.TrainedForest, params: logic.IForestParams, feature_names: tuple[str, ...]
) -> dict[str, Any]:
    """Content of ``meta.json``."""
    import sklearn

    return {
        "format_version": META_FORMAT_VERSION,
        "stage": STAGE,
        "forest_file": FOREST_FILE,
        "forest_format_version": FOREST_FORMAT_VERSION,
        "skops_file": SKOPS_FILE,
        "skops_trusted_types": list(logic.SKOPS_TRUSTED_TYPES),
        "sklearn_version": sklearn.__version__,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(feature_names),
        "forest_input": "forest.npz scores the full FEATURE_NAMES vector; the sklearn model "
        "(iforest.skops) takes feature_names only",
        "params": params.as_dict(),
        "max_samples_": int(forest.model.max_samples_),
        "offset_": float(forest.model.offset_),
        "n_trees": forest.arrays.n_trees,
        "n_nodes": forest.arrays.n_nodes,
        "max_depth": forest.arrays.max_depth,
        "train_seconds": round(forest.train_seconds, 3),
        "rows": {"train": forest.n_train, "valid": forest.n_valid},
        "score": "score_samples: lower = more anomalous; fraud score = -score_samples",
        "score_stats": forest.score_stats,
        "metrics": {"valid": forest.valid_metrics},
    }


def log_to_mlflow(
    settings: Settings,
    staging: Path,
    forest: logic.TrainedForest,
    data: Any,
    meta: dict[str, Any],
    metrics: dict[str, float],
) -> str:
    """Log params, metrics, the arrays and the skops model to one MLflow run; returns its id.

    Raises:
        MlflowLoggingError: Anything went wrong talking to MLflow.
    """
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    import sklearn
    import skops
    from mlflow.models import infer_signature

    uri = settings.mlflow.tracking_uri
    with (
        mlflow_guard("logging of train-iforest", uri),
        tracking.stage_run(settings.mlflow, STAGE) as run,
    ):
        mlflow.log_params(
            {
                **meta["params"],
                "feature_version": FEATURE_VERSION,
                "n_features": len(data.feature_names),
                "max_samples_": meta["max_samples_"],
            }
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_artifact(str(staging / FOREST_FILE), artifact_path="forest")
        mlflow.log_artifact(str(staging / SKOPS_FILE), artifact_path="forest")
        mlflow.log_dict(meta, META_FILE)
        example = data.valid.X[:5]
        mlflow.sklearn.log_model(
            forest.model,
            name="iforest",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(logic.SKOPS_TRUSTED_TYPES),
            signature=infer_signature(
                pd.DataFrame(example, columns=list(data.feature_names)),
                forest.model.predict(example),
            ),
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"skops=={skops.__version__}",
            ],
        )
        return run.info.run_id


@dataclass
class FittedForest:
    """The isolation forest, trained: what ``training.run_training`` publishes."""

    forest: logic.TrainedForest
    data: Any
    metrics: dict[str, float]
    meta: dict[str, Any]

    def save(self, folder: Path) -> None:
        import skops.io

        self.forest.arrays.save(folder / FOREST_FILE)
        skops.io.dump(self.forest.model, folder / SKOPS_FILE)

    def log(self, settings: Settings, folder: Path) -> str:
        return log_to_mlflow(settings, folder, self.forest, self.data, self.meta, self.metrics)

    def summary(self) -> str:
        f = self.forest
        return (
            f"{f.arrays.n_trees} trees, {f.arrays.n_nodes} nodes, valid PR-AUC "
            f"{f.valid_metrics['pr_auc']:.4f}, recall@1%FPR "
            f"{f.valid_metrics['recall_at_1pct_fpr']:.4f}"
        )


def fitter(args: argparse.Namespace):
    """The function that fits the forest on a features table, for ``args``."""
    params = logic.IForestParams(
        n_estimators=args.n_estimators, max_samples=args.max_samples, seed=args.seed
    )

    def fit(table, source: str) -> FittedForest:
        data = training_data(table, ANOMALY_FEATURES, source=source, require_positives=False)
        logger.info("fitting on %d rows, %d features", data.train.n, len(data.feature_names))
        forest = logic.train_forest(data, params, scoring_features=FEATURE_NAMES)
        meta = build_meta(forest, params, data.feature_names)
        return FittedForest(forest, data, logic.flat_metrics(forest), meta)

    return fit


def main(argv: list[str] | None = None) -> int:
    return training_main(SPEC, fitter, argv)


if __name__ == "__main__":
    sys.exit(main())
