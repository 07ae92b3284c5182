"""Shared by the training stages (train-xgb, train-iforest): training matrices, ranking
metrics, atomic model folders and MLflow guarding.

* ``training_data`` turns the features table into train/valid numpy matrices in
  ``FEATURE_NAMES`` order, with one clear error naming the file and the column;
* ``ranking_metrics`` = ROC-AUC, PR-AUC (average precision) and recall at 1% FPR, the
  numbers every stage reports for a fraud score;
* model folders and metrics are published with ``storage.publish`` (one commit per
  stage: the model folder and the metrics JSON together, or neither);
* ``mlflow_guard`` turns any MLflow failure into ``MlflowLoggingError``: a training run
  never loses its tracking record silently.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.contracts import storage
from components.contracts.features import LABEL_COLUMNS, MISSING_INPUT_FEATURES, SIGNED_FEATURES
from components.contracts.layout import FEATURE_SUBSETS as SUBSETS
from components.contracts.layout import SUBSET_COLUMN
from components.contracts.schemas import FRAUD_TYPES, InputError, ServiceError, check_unique
from components.contracts.settings import Settings
from components.contracts.spec import Io

if TYPE_CHECKING:
    from components.contracts.spec import StageSpec

logger = logging.getLogger(__name__)

MAX_FPR = 0.01
"""False-positive rate at which recall is reported (``recall_at_1pct_fpr``)."""


class TrainingDataError(InputError):
    """The features table cannot be trained on; the message names the file and the problem."""


# ---------------------------------------------------------------------- training data


@dataclass(frozen=True)
class Subset:
    """One subset (train or valid) of the features table as numpy arrays."""

    X: np.ndarray
    """(n, F) float64 features in ``feature_names`` order."""
    y: np.ndarray
    """(n,) int8 labels: 1 = fraud."""
    fraud_type: np.ndarray
    """(n,) object array of fraud type names (``"none"`` for legitimate rows)."""

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def positives(self) -> int:
        return int(self.y.sum())

    def without_type(self, fraud_type: str) -> Subset:
        """The subset minus every row of ``fraud_type``."""
        return self.take(self.fraud_type != fraud_type)

    def take(self, rows: np.ndarray) -> Subset:
        """The rows selected by a boolean mask or an index array."""
        return Subset(self.X[rows], self.y[rows], self.fraud_type[rows])


@dataclass(frozen=True)
class TrainingData:
    """Train and valid subsets of the features table, plus the feature order."""

    feature_names: tuple[str, ...]
    train: Subset
    valid: Subset


def training_data(
    table: pa.Table,
    feature_names: Sequence[str],
    *,
    source: str = "features table",
    require_positives: bool = True,
) -> TrainingData:
    """Split the features table into train/valid numpy matrices (time split already done).

    Args:
        table: Features table: ``SUBSET_COLUMN``, ``LABEL_COLUMNS`` and every feature column.
        feature_names: Feature columns, in model input order (``features.FEATURE_NAMES``).
        source: File name used in error messages.
        require_positives: Demand fraud rows in both subsets (supervised training and
            PR-AUC early stopping need them; the isolation forest does not).

    Raises:
        TrainingDataError: ``check_features_table`` fails, a subset is empty,
            or (``require_positives``) a subset has no fraud or no legitimate rows.
    """
    check_features_table(table, feature_names, source=source)
    label, fraud_type = LABEL_COLUMNS

    subsets = {}
    for name in ("train", "valid"):
        part = table.filter(pc.equal(table.column(SUBSET_COLUMN), name))
        if part.num_rows == 0:
            raise TrainingDataError(
                f"{source}: subset '{name}' is empty (column '{SUBSET_COLUMN}')"
            )
        X = np.empty((part.num_rows, len(feature_names)), dtype=np.float64)
        for j, col in enumerate(feature_names):
            X[:, j] = part.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        y = part.column(label).to_numpy(zero_copy_only=False).astype(np.int8)
        types = np.asarray(part.column(fraud_type).to_pylist(), dtype=object)
        subset = Subset(X, y, types)
        if require_positives and subset.positives == 0:
            raise TrainingDataError(
                f"{source}: subset '{name}' has no fraud rows ('{label}' all false)"
            )
        if require_positives and subset.positives == subset.n:
            raise TrainingDataError(f"{source}: subset '{name}' has only fraud rows")
        subsets[name] = subset
    return TrainingData(tuple(feature_names), subsets["train"], subsets["valid"])


def _bad(source: str, column: str, count: int, what: str) -> TrainingDataError:
    return TrainingDataError(f"{source}: column '{column}' has {count} row(s) {what}")


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(mask).as_py() or 0)


_MAY_BE_MISSING = frozenset(n for names in MISSING_INPUT_FEATURES.values() for n in names)
"""Features that are NaN where an optional input was not logged (a null in the table)."""


def check_features_table(
    table: pa.Table, feature_names: Sequence[str], *, source: str = "features table"
) -> None:
    """Check what the models will see; raise one ``TrainingDataError`` naming file and column.

    Checks, in order: required columns present; ``transaction_id`` unique (when present);
    ``subset`` values in ``SUBSETS``; ``is_fraud`` boolean or 0/1 integers without nulls;
    ``fraud_type`` a known type; every feature numeric, without nulls or +-inf, without NaN
    unless an optional input may be missing for it (``MISSING_INPUT_FEATURES``), and >= 0
    unless listed in ``features.SIGNED_FEATURES``.
    """
    required = [SUBSET_COLUMN, *LABEL_COLUMNS, *feature_names]
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise TrainingDataError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}"
        )
    if "transaction_id" in table.column_names:
        try:
            check_unique(table.column("transaction_id"), source=source, column="transaction_id")
        except InputError as exc:
            raise TrainingDataError(str(exc)) from exc
    subset = table.column(SUBSET_COLUMN)
    if not pa.types.is_string(subset.type) and not pa.types.is_large_string(subset.type):
        raise TrainingDataError(
            f"{source}: column '{SUBSET_COLUMN}' must be text, got {subset.type}"
        )
    unknown = _count(pc.invert(pc.fill_null(pc.is_in(subset, value_set=pa.array(SUBSETS)), False)))
    if unknown:
        raise _bad(source, SUBSET_COLUMN, unknown, f"not one of {', '.join(SUBSETS)}")
    label, fraud_type = LABEL_COLUMNS
    y = table.column(label)
    if y.null_count:
        raise _bad(source, label, y.null_count, "null")
    if pa.types.is_integer(y.type):
        bad = _count(pc.invert(pc.is_in(y, value_set=pa.array([0, 1], type=y.type))))
        if bad:
            raise _bad(source, label, bad, "not 0 or 1")
    elif not pa.types.is_boolean(y.type):
        raise _bad(source, label, len(y), f"of type {y.type} (labels must be true/false or 0/1)")
    types = table.column(fraud_type)
    known = pc.fill_null(pc.is_in(types, value_set=pa.array(FRAUD_TYPES)), False)
    bad = _count(pc.invert(known)) if pa.types.is_string(types.type) else len(types)
    if bad:
        raise _bad(source, fraud_type, bad, f"not a known fraud type ({', '.join(FRAUD_TYPES)})")
    for name in feature_names:
        col = table.column(name)
        typ = col.type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ)):
            raise TrainingDataError(f"{source}: column '{name}' must be numeric, got {typ}")
        if col.null_count:
            raise _bad(source, name, col.null_count, "null")
        if pa.types.is_boolean(typ):
            continue
        if pa.types.is_floating(typ):
            nan = _count(pc.is_nan(col))
            if nan and name not in _MAY_BE_MISSING:
                raise _bad(source, name, nan, "NaN")
            inf = _count(pc.is_inf(col))
            if inf:
                raise _bad(source, name, inf, "infinite")
        if name not in SIGNED_FEATURES:
            negative = _count(pc.less(col, 0))
            if negative:
                raise _bad(source, name, negative, "negative (this feature is >= 0)")


# ---------------------------------------------------------------------- metrics


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """Highest recall over thresholds whose false-positive rate is at most ``max_fpr``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision) and recall at 1% FPR of a fraud score.

    Returns NaN for every metric when ``y`` holds a single class (undefined).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return {"roc_auc": float("nan"), "pr_auc": float("nan"), "recall_at_1pct_fpr": float("nan")}
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "recall_at_1pct_fpr": recall_at_fpr(y, score),
    }


# ---------------------------------------------------------------------- threads


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` as fallback)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def prefer_passive_openmp() -> None:
    """Make OpenMP threads sleep instead of spin while waiting (unless the user chose).

    Under CPU contention (shared CI runners, busy nodes) libgomp's default spin-waiting made
    2-thread XGBoost ~10x slower than passive waiting (55 s vs 5.7 s on 28k rows here);
    when the CPUs are idle passive waiting costs next to nothing. Must run before the
    OpenMP runtime is loaded (before ``import xgboost``).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ---------------------------------------------------------------------- outputs


class MlflowLoggingError(ServiceError):
    """Logging to MLflow failed; the stage fails rather than silently losing its run."""


@contextlib.contextmanager
def mlflow_guard(what: str, tracking_uri: str) -> Iterator[None]:
    """Turn any failure inside the block into ``MlflowLoggingError`` naming the store."""
    try:
        yield
    except MlflowLoggingError:
        raise
    except Exception as exc:
        raise MlflowLoggingError(
            f"MLflow {what} failed (tracking URI {tracking_uri}): {type(exc).__name__}: {exc}"
        ) from exc


def training_io(model_files: str) -> dict[str, tuple[Io, ...]]:
    """The inputs and outputs every training stage declares (``StageSpec(**training_io(...))``):
    the features table in, the model folder and its metrics out."""
    return {
        "inputs": (Io("features", "Dataset", "Feature table from ``features``."),),
        "outputs": (
            Io("model", "Model", f"Model folder: {model_files}."),
            Io(
                "metrics",
                "Metrics",
                "Validation metrics, flat name -> number (KFP Metrics, shown in the run's UI).",
                required=False,
            ),
        ),
    }


def publish_metrics(
    metrics: dict[str, float],
    args: argparse.Namespace,
    publication: storage.Publication | None = None,
) -> dict[str, float]:
    """Write the flat metrics JSON (``--out-metrics``) and the KFP Metrics metadata.

    With ``publication`` the metrics JSON is staged in it (committed with the model).
    KFP Metrics values must be JSON numbers, so NaN/inf are dropped. Returns what was written.
    """
    from components.contracts import kfp_io

    finite = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    if args.out_metrics:
        target = publication.file(args.out_metrics) if publication else args.out_metrics
        storage.write_json(finite, target)
    kfp_io.write_executor_output(args.executor_input, args.executor_output, {"metrics": finite})
    return finite


# ---------------------------------------------------------------------- the stage CLI

META_FILE = "meta.json"
"""The model folder's metadata file, written by every training stage."""
META_FORMAT_VERSION = 1


def meta_header(spec: StageSpec, params: Any, feature_names: Sequence[str]) -> dict[str, Any]:
    """The keys every training stage's ``meta.json`` starts with: format, stage, features
    and the hyperparameters (``params.as_dict()``)."""
    from components.contracts.features import FEATURE_VERSION

    return {
        "format_version": META_FORMAT_VERSION,
        "stage": spec.name,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(feature_names),
        "params": params.as_dict(),
    }


@dataclass
class Fitted:
    """What a training stage's fit returns: the trained model(s), ready to publish. A stage
    subclasses it with its models and implements ``save``, ``log_models`` and ``summary``."""

    data: TrainingData
    """The matrices it was trained and validated on."""
    metrics: dict[str, float]
    """Flat validation metrics (``--out-metrics``, KFP Metrics, MLflow)."""
    meta: dict[str, Any]
    """Content of ``meta.json`` (``params``, ``feature_version``; the MLflow run id is added
    before it is written)."""

    def mlflow_params(self) -> dict[str, Any]:
        """The params of the stage's MLflow run: the hyperparameters and the feature set."""
        return {
            **self.meta["params"],
            "feature_version": self.meta["feature_version"],
            "n_features": len(self.data.feature_names),
        }

    def save(self, folder: Path) -> None:
        """Write the model files into the staged model folder."""
        raise NotImplementedError

    def log_models(self, folder: Path) -> None:
        """Log the models (from the staged folder) to the active MLflow run."""
        raise NotImplementedError

    def summary(self) -> str:
        """One line for the person at the terminal."""
        raise NotImplementedError


def log_training_run(
    spec: StageSpec,
    settings: Settings,
    fitted: Fitted,
    folder: Path,
    executor_input: str | None = None,
    pipeline_run_id: str | None = None,
) -> str:
    """One MLflow run for the stage: params, finite metrics, models, ``meta.json``; its id.

    Under Kubeflow's MLflow integration the task's KFP input parameters (read from
    ``executor_input``) are left to the launcher, which logs them with its own spelling.

    Raises:
        MlflowLoggingError: Anything went wrong talking to MLflow.
    """
    import mlflow

    from components.contracts import tracking

    with (
        mlflow_guard(f"logging of {spec.name}", settings.mlflow.tracking_uri),
        tracking.stage_run(settings.mlflow, spec.name, pipeline_run_id=pipeline_run_id) as run,
    ):
        tracking.log_params(fitted.mlflow_params(), executor_input=executor_input)
        mlflow.log_metrics({k: v for k, v in fitted.metrics.items() if np.isfinite(v)})
        fitted.log_models(folder)
        mlflow.log_dict(fitted.meta, META_FILE)
        return run.info.run_id


def run_training(
    spec: StageSpec, args: argparse.Namespace, fit: Callable[[pa.Table, str], Fitted]
) -> dict[str, float]:
    """Read the features table, ``fit``, then publish the model folder (model files, MLflow
    run id in ``meta.json``) and the metrics JSON in one commit; returns the metrics."""
    settings = Settings.from_env()
    fitted = fit(storage.read_table(args.in_features), args.in_features)
    with storage.publish(spec.name) as pub:  # model folder and metrics: one commit
        staging = pub.local_folder(args.out_model)
        fitted.save(staging)
        fitted.meta["mlflow_run_id"] = log_training_run(
            spec, settings, fitted, staging, args.executor_input, args.pipeline_run_id
        )
        storage.write_json(fitted.meta, str(staging / META_FILE))
        publish_metrics(fitted.metrics, args, pub)
    print(f"{spec.name}: {fitted.summary()} -> {args.out_model}")
    return fitted.metrics


def training_parser(spec: StageSpec) -> argparse.ArgumentParser:
    """A training stage's CLI parser: its spec's flags plus ``--pipeline-run-id``."""
    from components.contracts import cli, tracking

    return cli.build_parser(spec, extra=tracking.add_pipeline_run_id_arg)


def training_main(
    spec: StageSpec,
    fit: Callable[[argparse.Namespace], Callable[[pa.Table, str], Fitted]],
    argv: Sequence[str] | None = None,
) -> int:
    """The training stage CLI: parse ``argv`` by ``spec``, then ``run_training`` under the
    CLI error contract. ``fit(args)`` returns the function that trains on a table."""
    from components.contracts import cli

    args = training_parser(spec).parse_args(argv)
    return cli.run(spec.name, lambda: run_training(spec, args, fit(args)))
