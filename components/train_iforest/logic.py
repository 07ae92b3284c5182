"""Pure logic of ``train-iforest``: fit the isolation forest and describe its scores.

The forest is unsupervised: it is fitted on the train subset's features only (labels are
not used for fitting; they only feed the informational validation metrics). The anomaly
("fraud") score is ``-score_samples``: higher = more isolated = more suspicious.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from components.contracts.forest import ForestArrays
from components.contracts.schemas import InputError
from components.contracts.training import Subset, TrainingData, available_cpus, ranking_metrics

logger = logging.getLogger(__name__)

SKOPS_TRUSTED_TYPES = (
    "sklearn.ensemble._iforest.IsolationForest",
    "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.tree._tree.Tree",
)
"""Exactly the types ``skops.io.load`` must trust to load ``iforest.skops``; nothing else."""

SCORE_QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)


@dataclass(frozen=True, kw_only=True)
class IForestParams:
    """Hyperparameters of ``train-iforest`` (the CLI flags of the same names)."""

    n_estimators: int = 200
    max_samples: int = 512
    seed: int = 42
    n_jobs: int = field(default_factory=available_cpus)

    def __post_init__(self) -> None:
        bad = [
            f"{name}={getattr(self, name)!r}"
            for name, ok in {
                "n_estimators": self.n_estimators >= 1,
                "max_samples": self.max_samples >= 2,
                "n_jobs": self.n_jobs >= 1,
            }.items()
            if not ok
        ]
        if bad:
            raise InputError(f"invalid hyperparameter(s): {', '.join(bad)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class TrainedForest:
    """The fitted forest, its array form, and its score statistics."""

    model: Any
    """Fitted ``sklearn.ensemble.IsolationForest``."""
    arrays: ForestArrays
    train_seconds: float
    score_stats: dict[str, dict[str, float]]
    """Per subset (train/valid): mean, std, min, max and quantiles of ``score_samples``."""
    valid_metrics: dict[str, float]
    """Ranking metrics of ``-score_samples`` against the valid labels (information only)."""
    n_train: int
    n_valid: int


def score_stats(scores: np.ndarray) -> dict[str, float]:
    """Mean, std, min, max and ``SCORE_QUANTILES`` of a score vector."""
    out = {
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "min": float(np.min(scores)),
        "max": float(np.max(scores)),
    }
    for q, v in zip(SCORE_QUANTILES, np.quantile(scores, SCORE_QUANTILES), strict=True):
        out[f"q{q * 100:g}"] = float(v)
    return out


def fit_forest(train: Subset, params: IForestParams) -> Any:
    """Fit ``IsolationForest`` on the train features (labels unused).

    ``max_samples`` is capped at the number of training rows, as sklearn itself does
    (with a warning) when asked for more.
    """
    from sklearn.ensemble import IsolationForest

    if train.n < 2:
        raise InputError(f"need at least 2 training rows to fit the forest, got {train.n}")
    model = IsolationForest(
        n_estimators=params.n_estimators,
        max_samples=min(params.max_samples, train.n),
        random_state=params.seed,
        n_jobs=params.n_jobs,
    )
    return model.fit(train.X)


def train_forest(
    data: TrainingData,
    params: IForestParams,
    *,
    scoring_features: tuple[str, ...] | None = None,
) -> TrainedForest:
    """Fit the forest, flatten it to ``ForestArrays`` and score train/valid.

    Args:
        data: Train/valid matrices; the forest is fitted on ``data.feature_names``.
        params: Hyperparameters.
        scoring_features: The wider feature vector the exported arrays will score (e.g.
            ``FEATURE_NAMES``, when ``data`` holds only ``ANOMALY_FEATURES``). Every name in
            ``data.feature_names`` must be in it. None: the arrays score ``data``'s columns.
    """
    started = time.perf_counter()
    model = fit_forest(data.train, params)
    seconds = time.perf_counter() - started
    if scoring_features is None:
        arrays = ForestArrays.from_sklearn(model)
    else:
        missing = [n for n in data.feature_names if n not in scoring_features]
        if missing:
            raise RuntimeError(f"forest features not in the scoring vector: {', '.join(missing)}")
        arrays = ForestArrays.from_sklearn(
            model,
            feature_index=[scoring_features.index(n) for n in data.feature_names],
            n_features=len(scoring_features),
        )
    train_scores = model.score_samples(data.train.X)
    valid_scores = model.score_samples(data.valid.X)
    logger.info(
        "fitted %d trees (max_samples=%d) in %.1fs",
        params.n_estimators,
        model.max_samples_,
        seconds,
    )
    return TrainedForest(
        model=model,
        arrays=arrays,
        train_seconds=seconds,
        score_stats={"train": score_stats(train_scores), "valid": score_stats(valid_scores)},
        valid_metrics=ranking_metrics(data.valid.y, -valid_scores),
        n_train=data.train.n,
        n_valid=data.valid.n,
    )


def flat_metrics(forest: TrainedForest) -> dict[str, float]:
    """The stage's KFP Metrics: a flat name -> number mapping."""
    out = {f"valid_{k}": v for k, v in forest.valid_metrics.items()}
    out.update(
        valid_score_mean=forest.score_stats["valid"]["mean"],
        valid_score_std=forest.score_stats["valid"]["std"],
        train_score_mean=forest.score_stats["train"]["mean"],
        train_score_std=forest.score_stats["train"]["std"],
        train_seconds=round(forest.train_seconds, 3),
        n_train=float(forest.n_train),
        n_valid=float(forest.n_valid),
        n_nodes=float(forest.arrays.n_nodes),
    )
    return out
