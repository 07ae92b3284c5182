"""Pure logic of ``train-xgb``: the XGBoost fit (production booster + one leave-one-type-out
fold booster per fraud type) and metrics.

No file, network or MLflow access here: the CLI (``__main__``) reads the features table,
turns it into matrices (``contracts.training.training_data``), calls these functions and
writes the outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from components.contracts.missing import missing_inputs
from components.contracts.schemas import InputError
from components.contracts.training import (
    Subset,
    TrainingData,
    TrainingDataError,
    available_cpus,
    ranking_metrics,
)
from components.train_xgb.evidence import beyond_legitimate

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------- XGBoost


def reject_invalid(params: Any, checks: dict[str, bool]) -> None:
    """Raise one ``InputError`` naming every hyperparameter whose check failed."""
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise InputError(
            "invalid hyperparameter(s): "
            + ", ".join(f"{name}={getattr(params, name)!r}" for name in bad)
        )


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
    nthread: int = field(default_factory=available_cpus)

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
        reject_invalid(self, checks)

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


@dataclass(frozen=True, kw_only=True)
class FoldParams:
    """How the leave-one-type-out fold boosters are made cheaper than the production one."""

    loto_rounds: int = 80
    """Maximum boosting rounds of a fold booster (early stopping as in production)."""
    loto_learning_rate: float = 0.25
    """Shrinkage of a fold booster (larger: fewer rounds needed)."""
    loto_legit_fraction: float = 0.2
    """Share of legitimate train rows a fold booster fits on (seeded; every fraud row kept;
    ``scale_pos_weight`` follows the rows kept)."""

    def __post_init__(self) -> None:
        if self.loto_rounds < 0:
            raise InputError(f"invalid hyperparameter(s): loto_rounds={self.loto_rounds!r}")
        if not 0 < self.loto_learning_rate <= 1:
            raise InputError(
                f"invalid hyperparameter(s): loto_learning_rate={self.loto_learning_rate!r}"
            )
        if not 0 < self.loto_legit_fraction <= 1:
            raise InputError(
                f"invalid hyperparameter(s): loto_legit_fraction={self.loto_legit_fraction!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class AugmentParams:
    """What the train rows are augmented with (never valid or test)."""

    mask_share: float = 0.5
    """Train rows added again (seeded draw) with optional inputs missing
    (``missing.missing_inputs``)."""
    seed_contract_share: float = 0.5
    """Of those copies, the share that keep only the seed brief's seven fields (every
    optional input missing); each other copy misses each optional field with probability 1/2."""
    evidence_copies: int = 3
    """Copies of each void / no-sale abuse train row with its count beyond any legit row's
    (``evidence.beyond_legitimate``; 0: off)."""
    evidence_max_factor: float = 3.0
    """The copies' count is drawn up to this multiple of the largest legitimate count."""

    def __post_init__(self) -> None:
        checks = {
            "mask_share": 0 <= self.mask_share <= 1,
            "seed_contract_share": 0 <= self.seed_contract_share <= 1,
            "evidence_copies": self.evidence_copies >= 0,
            "evidence_max_factor": self.evidence_max_factor >= 1,
        }
        reject_invalid(self, checks)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def augment(self, train: Subset, feature_names: Sequence[str], seed: int) -> dict[str, Any]:
        """The augmented train rows and how many of each kind of copy were added."""
        prior = beyond_legitimate(
            train,
            feature_names,
            copies=self.evidence_copies,
            max_factor=self.evidence_max_factor,
            seed=seed,
        )
        share, seven = self.mask_share, self.seed_contract_share
        out = missing_inputs(
            prior, feature_names, share=share, seed_contract_share=seven, seed=seed
        )
        return {"train": out, "evidence": prior.n - train.n, "masked": out.n - prior.n}


@dataclass(frozen=True, eq=False)
class XgbModels:
    """The production booster and one leave-one-type-out fold booster per fraud type."""

    production: TrainedBooster
    folds: dict[str, TrainedBooster]
    """Fraud type -> booster fitted on train/valid without any row of that type."""
    dropped_rows: dict[str, dict[str, int]]
    """Fraud type -> rows of it removed from train / valid for its fold."""
    masked_copies: int = 0
    """Train rows added again with optional inputs missing (``missing.missing_inputs``)."""
    evidence_copies: int = 0
    """Train rows added by the extrapolation prior (``evidence.beyond_legitimate``)."""


def fold_types(data: TrainingData) -> list[str]:
    """The fraud types with rows in the train subset, in ``fraud_type`` order of appearance
    sorted by name (one fold each)."""
    return sorted({str(t) for t in data.train.fraud_type[data.train.y == 1]} - {"none"})


def train_fold(
    data: TrainingData, held_out: str, params: XgbParams, fold: FoldParams
) -> tuple[TrainedBooster, dict[str, int]]:
    """The fold booster for ``held_out``: its rows dropped from train AND valid (so neither
    the trees nor early stopping see its labels), legit train rows subsampled."""
    train = data.train.without_type(held_out)
    valid = data.valid.without_type(held_out)
    dropped = {"train": data.train.n - train.n, "valid": data.valid.n - valid.n}
    if fold.loto_legit_fraction < 1:
        rng = np.random.default_rng(params.seed)
        keep = (train.y == 1) | (rng.random(train.n) < fold.loto_legit_fraction)
        train = train.take(keep)
    cheap = replace(
        params,
        n_estimators=fold.loto_rounds,
        learning_rate=fold.loto_learning_rate,
        scale_pos_weight=None,
    )
    try:
        return train_booster(train, valid, data.feature_names, cheap), dropped
    except TrainingDataError as exc:
        raise TrainingDataError(f"fold without fraud type '{held_out}': {exc}") from exc


def train_models(
    data: TrainingData, params: XgbParams, fold: FoldParams, augment: AugmentParams | None = None
) -> XgbModels:
    """Train the production booster and the leave-one-type-out fold boosters
    (``fold.loto_rounds == 0`` disables the folds), both on the train rows plus the
    extrapolation prior's copies and copies with optional inputs missing (``augment``); the
    copies of a held-out type leave its fold with it. Valid (early stopping) is never
    augmented.

    Raises:
        TrainingDataError: A subset cannot be trained on (see ``train_booster``).
    """
    added = {"evidence": 0, "masked": 0}
    if augment is not None:
        added = augment.augment(data.train, data.feature_names, params.seed)
        data = replace(data, train=added["train"])
    production = train_booster(data.train, data.valid, data.feature_names, params)
    folds: dict[str, TrainedBooster] = {}
    dropped: dict[str, dict[str, int]] = {}
    if fold.loto_rounds:
        for name in fold_types(data):
            folds[name], dropped[name] = train_fold(data, name, params, fold)
    return XgbModels(production, folds, dropped, added["masked"], added["evidence"])


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
        n_train_masked_copies=float(models.masked_copies),
        n_train_evidence_copies=float(models.evidence_copies),
    )
    for name, booster in models.folds.items():
        out[f"loto_{name}_best_iteration"] = float(booster.best_iteration)
        out[f"loto_{name}_train_seconds"] = round(booster.train_seconds, 3)
    if models.folds:
        out["loto_train_seconds"] = round(sum(b.train_seconds for b in models.folds.values()), 3)
    return out
