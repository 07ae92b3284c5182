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
from pathlib import Path
from typing import Any

import numpy as np

from components.contracts import cli, storage, tracking
from components.contracts.features import ANOMALY_FEATURES, FEATURE_NAMES, FEATURE_VERSION
from components.contracts.forest import FORMAT_VERSION as FOREST_FORMAT_VERSION
from components.contracts.settings import Settings
from components.contracts.training import (
    MlflowLoggingError,
    add_training_io_args,
    mlflow_guard,
    publish_metrics,
    training_data,
)
from components.train_iforest import logic

STAGE = "train-iforest"
FOREST_FILE = "forest.npz"
SKOPS_FILE = "iforest.skops"
META_FILE = "meta.json"
META_FORMAT_VERSION = 1

logger = logging.getLogger(STAGE)


def build_parser() -> argparse.ArgumentParser:
    d = logic.IForestParams()
    p = cli.ArgumentParser(
        stage=STAGE,
        prog="python -m components.train_iforest",
        description="Fit the unsupervised isolation forest on the features table's train "
        "subset; save it as plain arrays (forest.npz) and skops.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_io_args(p, f"{FOREST_FILE}, {SKOPS_FILE}, {META_FILE}")
    hp = p.add_argument_group("hyperparameters")
    hp.add_argument("--n-estimators", type=int, default=d.n_estimators, help="number of trees")
    hp.add_argument(
        "--max-samples",
        type=int,
        default=d.max_samples,
        help="rows sampled to grow each tree (capped at the training rows)",
    )
    hp.add_argument("--seed", type=int, default=d.seed, help="random seed")
    tracking.add_pipeline_run_id_arg(p)
    return p


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
    executor_input: str | None = None,
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
        tracking.log_params(
            {
                **meta["params"],
                "feature_version": FEATURE_VERSION,
                "n_features": len(data.feature_names),
                "max_samples_": meta["max_samples_"],
            },
            executor_input=executor_input,
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


def run(args: argparse.Namespace) -> dict[str, float]:
    """Run the stage; returns the flat metrics."""
    import skops.io

    settings = Settings.from_env()
    params = logic.IForestParams(
        n_estimators=args.n_estimators, max_samples=args.max_samples, seed=args.seed
    )
    table = storage.read_table(args.in_features)
    data = training_data(table, ANOMALY_FEATURES, source=args.in_features, require_positives=False)
    logger.info("fitting on %d rows, %d features", data.train.n, len(data.feature_names))
    forest = logic.train_forest(data, params, scoring_features=FEATURE_NAMES)
    metrics = logic.flat_metrics(forest)
    meta = build_meta(forest, params, data.feature_names)
    with storage.publish(STAGE) as pub:  # model folder and metrics: one commit
        staging = pub.local_folder(args.out_model)
        forest.arrays.save(staging / FOREST_FILE)
        skops.io.dump(forest.model, staging / SKOPS_FILE)
        meta["mlflow_run_id"] = log_to_mlflow(
            settings, staging, forest, data, meta, metrics, args.executor_input
        )
        storage.write_json(meta, str(staging / META_FILE))
        publish_metrics(metrics, args, pub)
    print(
        f"{STAGE}: {forest.arrays.n_trees} trees, {forest.arrays.n_nodes} nodes, valid PR-AUC "
        f"{forest.valid_metrics['pr_auc']:.4f}, recall@1%FPR "
        f"{forest.valid_metrics['recall_at_1pct_fpr']:.4f} -> {args.out_model}"
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tracking.use_pipeline_run_id(args.pipeline_run_id)
    try:
        return cli.run(STAGE, lambda: run(args))
    except MlflowLoggingError as exc:
        print(f"{STAGE}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
