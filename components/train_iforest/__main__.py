"""CLI of ``train-iforest``: ``python -m components.train_iforest --in-features F --out-model DIR``.

Fits the isolation forest on the train subset's features, saves it as plain arrays
(``forest.npz``, what serving uses) and as ``iforest.skops`` (for sklearn users), logs the
run to MLflow, then publishes the model folder atomically and writes the metrics JSON and
(under KFP) the executor output.
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
from components.contracts.features import ANOMALY_FEATURES, FEATURE_NAMES
from components.contracts.forest import FORMAT_VERSION as FOREST_FORMAT_VERSION
from components.contracts.training import (
    Fitted,
    meta_header,
    training_data,
    training_main,
    training_parser,
)
from components.train_iforest import logic
from components.train_iforest.spec import SPEC

FOREST_FILE = "forest.npz"
SKOPS_FILE = "iforest.skops"

logger = logging.getLogger(SPEC.name)
build_parser = functools.partial(training_parser, SPEC)


def build_meta(
    forest: logic.TrainedForest, params: logic.IForestParams, feature_names: tuple[str, ...]
) -> dict[str, Any]:
    """Content of ``meta.json``."""
    import sklearn

    return {
        **meta_header(SPEC, params, feature_names),
        "forest_file": FOREST_FILE,
        "forest_format_version": FOREST_FORMAT_VERSION,
        "skops_file": SKOPS_FILE,
        "skops_trusted_types": list(logic.SKOPS_TRUSTED_TYPES),
        "sklearn_version": sklearn.__version__,
        "forest_input": "forest.npz scores the full FEATURE_NAMES vector; the sklearn model "
        "(iforest.skops) takes feature_names only",
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


@dataclass
class FittedForest(Fitted):
    """The isolation forest, trained: what ``training.run_training`` publishes."""

    forest: logic.TrainedForest

    def mlflow_params(self) -> dict[str, Any]:
        return {**super().mlflow_params(), "max_samples_": self.meta["max_samples_"]}

    def save(self, folder: Path) -> None:
        import skops.io

        self.forest.arrays.save(folder / FOREST_FILE)
        skops.io.dump(self.forest.model, folder / SKOPS_FILE)

    def log_models(self, folder: Path) -> None:
        """Both files as artifacts, and the sklearn model as an MLflow model (skops)."""
        import mlflow
        import mlflow.sklearn
        import pandas as pd
        import sklearn
        import skops
        from mlflow.models import infer_signature

        for name in (FOREST_FILE, SKOPS_FILE):
            mlflow.log_artifact(str(folder / name), artifact_path="forest")
        example = self.data.valid.X[:5]
        mlflow.sklearn.log_model(
            self.forest.model,
            name="iforest",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(logic.SKOPS_TRUSTED_TYPES),
            signature=infer_signature(
                pd.DataFrame(example, columns=list(self.data.feature_names)),
                self.forest.model.predict(example),
            ),
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"skops=={skops.__version__}",
            ],
        )

    def summary(self) -> str:
        f = self.forest
        return (
            f"{f.arrays.n_trees} trees, {f.arrays.n_nodes} nodes, valid PR-AUC "
            f"{f.valid_metrics['pr_auc']:.4f}, recall@1%FPR "
            f"{f.valid_metrics['recall_at_1pct_fpr']:.4f}"
        )


def fitter(args: argparse.Namespace):
    """The function that fits the forest on a features table, for ``args``."""
    params = logic.IForestParams(**cli.dataclass_kwargs(args, logic.IForestParams))

    def fit(table, source: str) -> FittedForest:
        data = training_data(table, ANOMALY_FEATURES, source=source, require_positives=False)
        logger.info("fitting on %d rows, %d features", data.train.n, len(data.feature_names))
        forest = logic.train_forest(data, params, scoring_features=FEATURE_NAMES)
        meta = build_meta(forest, params, data.feature_names)
        return FittedForest(data, logic.flat_metrics(forest), meta, forest)

    return fit


def main(argv: list[str] | None = None) -> int:
    return training_main(SPEC, fitter, argv)


if __name__ == "__main__":
    sys.exit(main())
