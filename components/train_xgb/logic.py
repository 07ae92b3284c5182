"""Pure logic of ``train-xgb``: training matrices, the XGBoost fit, ranking metrics.

No file, network or MLflow access here: the CLI (``__main__``) reads the features table,
calls these functions and writes the outputs. ``training_data`` and ``ranking_metrics`` are
shared with ``train-iforest`` so both stages read the table and score validation the same way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.contracts.features import LABEL_COLUMNS, SUBSET_COLUMN

logger = logging.getLogger(__name__)

NO_NOVEL_TYPE = "none"
"""``--novel-fraud-type`` value that disables the novelty model (``none`` is also the
``fraud_type`` of legitimate rows, so dropping it would make no sense anyway)."""

MAX_FPR = 0.01
"""False-positive rate at which recall is reported (``recall_at_1pct_fpr``)."""


class TrainingDataError(ValueError):
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
        keep = self.fraud_type != fraud_type
        return Subset(self.X[keep], self.y[keep], self.fraud_type[keep])


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
        TrainingDataError: A required column is missing or not numeric, a subset is empty,
            or (``require_positives``) a subset has no fraud or no legitimate rows.
    """
    required = [SUBSET_COLUMN, *LABEL_COLUMNS, *feature_names]
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise TrainingDataError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}"
        )
    for name in feature_names:
        typ = table.schema.field(name).type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ)):
            raise TrainingDataError(f"{source}: column '{name}' must be numeric, got {typ}")
    label, fraud_type = LABEL_COLUMNS
    if table.column(label).null_count or table.column(SUBSET_COLUMN).null_count:
        raise TrainingDataError(f"{source}: column '{label}' or '{SUBSET_COLUMN}' has nulls")

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


# ---------------------------------------------------------------------- XGBoost


@dataclass(frozen=True, kw_only=True)
class XgbParams:
    """Hyperparameters of ``train-xgb`` (the CLI flags of the same names)."""

    n_estimators: int = 400
    max_depth: int = 6
    learning_rate: float = 0.08
    subsample: float = 0.9
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    early_stopping_rounds: int = 30
    seed: int = 42
    scale_pos_weight: float | None = None
    """None: negatives / positives of the training rows."""
    nthread: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        checks = {
            "n_estimators": self.n_estimators >= 1,
            "max_depth": self.max_depth >= 1,
            "learning_rate": 0 < self.learning_rate <= 1,
            "subsample": 0 < self.subsample <= 1,
            "colsample_bytree": 0 < self.colsample_bytree <= 1,
            "min_child_weight": self.min_child_weight >= 0,
            "early_stopping_rounds": self.early_stopping_rounds >= 0,
            "scale_pos_weight": self.scale_pos_weight is None or self.scale_pos_weight > 0,
            "nthread": self.nthread >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "invalid hyperparameter(s): "
                + ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def imbalance_weight(y: np.ndarray) -> float:
    """``scale_pos_weight`` = negatives / positives (1.0 when there are no positives)."""
    pos = int(np.sum(y == 1))
    neg = int(np.sum(y == 0))
    return neg / pos if pos else 1.0


def booster_params(params: XgbParams, scale_pos_weight: float) -> dict[str, Any]:
    """The ``xgboost.train`` parameter dict (CPU ``hist``, binary logistic, ``aucpr``)."""
    return {
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "tree_method": "hist",
        "device": "cpu",
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "min_child_weight": params.min_child_weight,
        "scale_pos_weight": scale_pos_weight,
        "seed": params.seed,
        "nthread": params.nthread,
    }


@dataclass(frozen=True, eq=False)
class TrainedBooster:
    """A booster trimmed to its best iteration, with what it took to get there."""

    booster: Any
    """``xgboost.Booster`` holding exactly ``best_iteration + 1`` rounds."""
    best_iteration: int
    rounds_trained: int
    scale_pos_weight: float
    train_seconds: float
    train_metrics: dict[str, float]
    valid_metrics: dict[str, float]
    n_train: int
    n_valid: int
    train_positives: int
    valid_positives: int

    def summary(self) -> dict[str, Any]:
        """JSON-able description (for ``meta.json``)."""
        return {
            "best_iteration": self.best_iteration,
            "rounds_trained": self.rounds_trained,
            "scale_pos_weight": self.scale_pos_weight,
            "train_seconds": round(self.train_seconds, 3),
            "rows": {"train": self.n_train, "valid": self.n_valid},
            "positives": {"train": self.train_positives, "valid": self.valid_positives},
            "metrics": {"train": self.train_metrics, "valid": self.valid_metrics},
        }


def train_booster(
    train: Subset, valid: Subset, feature_names: Sequence[str], params: XgbParams
) -> TrainedBooster:
    """Fit a binary XGBoost classifier with early stopping on ``valid`` PR-AUC.

    The returned booster is sliced to its best iteration and carries ``feature_names``.

    Raises:
        TrainingDataError: ``train`` or ``valid`` lacks fraud or legitimate rows.
    """
    import xgboost as xgb

    for name, subset in (("train", train), ("valid", valid)):
        if subset.positives == 0 or subset.positives == subset.n:
            raise TrainingDataError(
                f"subset '{name}' needs both fraud and legitimate rows "
                f"({subset.positives} fraud of {subset.n})"
            )
    spw = (
        params.scale_pos_weight
        if params.scale_pos_weight is not None
        else imbalance_weight(train.y)
    )
    names = list(feature_names)
    dtrain = xgb.DMatrix(train.X, label=train.y, feature_names=names, nthread=params.nthread)
    dvalid = xgb.DMatrix(valid.X, label=valid.y, feature_names=names, nthread=params.nthread)
    started = time.perf_counter()
    booster = xgb.train(
        booster_params(params, spw),
        dtrain,
        num_boost_round=params.n_estimators,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        early_stopping_rounds=params.early_stopping_rounds or None,
        verbose_eval=False,
    )
    seconds = time.perf_counter() - started
    rounds = booster.num_boosted_rounds()
    best = int(booster.best_iteration) if params.early_stopping_rounds else rounds - 1
    trimmed = booster[: best + 1]
    trimmed.feature_names = names
    logger.info(
        "trained %d rounds in %.1fs, best iteration %d (scale_pos_weight=%.2f)",
        rounds,
        seconds,
        best,
        spw,
    )
    return TrainedBooster(
        booster=trimmed,
        best_iteration=best,
        rounds_trained=rounds,
        scale_pos_weight=float(spw),
        train_seconds=seconds,
        train_metrics=ranking_metrics(train.y, trimmed.predict(dtrain)),
        valid_metrics=ranking_metrics(valid.y, trimmed.predict(dvalid)),
        n_train=train.n,
        n_valid=valid.n,
        train_positives=train.positives,
        valid_positives=valid.positives,
    )


@dataclass(frozen=True, eq=False)
class XgbModels:
    """The production booster and the optional novelty booster."""

    production: TrainedBooster
    novelty: TrainedBooster | None
    novel_fraud_type: str
    dropped_rows: dict[str, int]
    """Rows of the novel type removed from train / valid for the novelty booster."""


def train_models(
    data: TrainingData, params: XgbParams, novel_fraud_type: str = NO_NOVEL_TYPE
) -> XgbModels:
    """Train the production booster and, unless disabled, the novelty booster.

    The novelty booster uses the same hyperparameters on train/valid minus every row whose
    ``fraud_type`` is ``novel_fraud_type`` (its ``scale_pos_weight`` is recomputed on the
    remaining rows unless fixed), so evaluate can check how a pattern never seen in training
    is caught. ``novel_fraud_type == "none"`` disables it.

    Raises:
        TrainingDataError: A subset cannot be trained on (see ``train_booster``).
    """
    production = train_booster(data.train, data.valid, data.feature_names, params)
    if novel_fraud_type == NO_NOVEL_TYPE:
        return XgbModels(production, None, NO_NOVEL_TYPE, {})
    train = data.train.without_type(novel_fraud_type)
    valid = data.valid.without_type(novel_fraud_type)
    dropped = {"train": data.train.n - train.n, "valid": data.valid.n - valid.n}
    if dropped["train"] == 0:
        logger.warning(
            "novel fraud type %r has no training rows: the novelty booster sees the same data",
            novel_fraud_type,
        )
    try:
        novelty = train_booster(train, valid, data.feature_names, params)
    except TrainingDataError as exc:
        raise TrainingDataError(
            f"novelty model without fraud type '{novel_fraud_type}': {exc}"
        ) from exc
    return XgbModels(production, novelty, novel_fraud_type, dropped)


def flat_metrics(models: XgbModels) -> dict[str, float]:
    """The stage's KFP Metrics: a flat name -> number mapping."""
    p = models.production
    out: dict[str, float] = {}
    for subset, metrics in (("valid", p.valid_metrics), ("train", p.train_metrics)):
        for name, value in metrics.items():
            out[f"{subset}_{name}"] = value
    out.update(
        best_iteration=float(p.best_iteration),
        scale_pos_weight=p.scale_pos_weight,
        train_seconds=round(p.train_seconds, 3),
        n_train=float(p.n_train),
        n_valid=float(p.n_valid),
    )
    if models.novelty is not None:
        for name, value in models.novelty.valid_metrics.items():
            out[f"novelty_valid_{name}"] = value
        out["novelty_best_iteration"] = float(models.novelty.best_iteration)
    return out
