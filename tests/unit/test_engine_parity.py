"""One scorer: the engine's batch API gives evaluate's numbers on models the stages train.

Evaluate scores today with ``Booster.predict(output_margin=True)`` (``xgb_margin``) and
``ForestArrays.score_samples``, which equals sklearn's ``IsolationForest.score_samples``.
Here both models are trained by the stages' own logic (``train_booster``, ``train_forest``
with the forest on ``ANOMALY_FEATURES`` scoring the full vector) on data from the project's
generator, and ``engine.score_features`` must reproduce those references exactly: the
engine adds leaf values in float32 in tree order as XGBoost's CPU predictor does, and sums
path lengths in float64 as sklearn does. The measured max abs difference is 0 for the
margins, the forest scores and the blended 0-100 risk score.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import xgboost

from components.contracts import blend
from components.contracts import features as F
from components.contracts.engine import IForestTrees, XGBTrees, score_features
from components.contracts.training import Subset, TrainingData
from components.datagen.logic import DatagenParams, generate
from components.train_iforest.logic import IForestParams, train_forest
from components.train_xgb.logic import XgbParams, train_booster


@pytest.fixture(scope="module")
def trained():
    table = pa.concat_tables(list(generate(DatagenParams(rows=12_000, days=14, seed=3))))
    df = table.to_pandas()
    raw = F.raw_matrix(table)
    prior = F.ProfileState().advance(raw, df["cashier_id"].tolist(), df["store_id"].tolist())
    X = F.compute_features(raw, prior)
    y = df["is_fraud"].to_numpy().astype(np.int8)
    kinds = df["fraud_type"].to_numpy().astype(object)
    cut = int(X.shape[0] * 0.7)

    def subset(cols: list[int], rows: slice) -> Subset:
        return Subset(X[rows][:, cols], y[rows], kinds[rows])

    everything = list(range(len(F.FEATURE_NAMES)))
    booster = train_booster(
        subset(everything, slice(0, cut)),
        subset(everything, slice(cut, None)),
        F.FEATURE_NAMES,
        XgbParams(n_estimators=120, nthread=1),
    ).booster
    anomaly = [F.FEATURE_NAMES.index(n) for n in F.ANOMALY_FEATURES]
    forest = train_forest(
        TrainingData(
            F.ANOMALY_FEATURES, subset(anomaly, slice(0, cut)), subset(anomaly, slice(cut, None))
        ),
        IForestParams(n_estimators=60, max_samples=256, n_jobs=1),
        scoring_features=F.FEATURE_NAMES,
    )
    return X, y, booster, forest


def test_score_features_equals_evaluate_references(trained):
    X, y, booster, forest = trained
    # What evaluate computes today (components/evaluate: xgb_margin, forest.score_samples).
    margin_ref = booster.predict(
        xgboost.DMatrix(X, feature_names=list(F.FEATURE_NAMES)), output_margin=True
    ).astype(np.float64)
    forest_ref = forest.model.score_samples(
        X[:, [F.FEATURE_NAMES.index(n) for n in F.ANOMALY_FEATURES]]
    )

    xgb_trees = XGBTrees.from_booster(booster)
    forest_trees = IForestTrees.from_forest(forest.arrays)
    margin, forest_score = score_features(xgb_trees, forest_trees, X)

    assert margin.dtype == forest_score.dtype == np.float64
    assert np.max(np.abs(margin - margin_ref)) == 0.0
    assert np.max(np.abs(forest_score - forest_ref)) == 0.0
    np.testing.assert_array_equal(forest.arrays.score_samples(X), forest_ref)

    params = blend.fit_blend(
        valid_margin=margin_ref,
        valid_iforest_score=forest_ref,
        valid_labels=y,
        train_iforest_score=forest_ref,
    )
    risk = blend.risk_score(margin, forest_score, params)
    np.testing.assert_array_equal(risk, blend.risk_score(margin_ref, forest_ref, params))


def test_score_features_rejects_a_matrix_of_the_wrong_width(trained):
    X, _, booster, forest = trained
    xgb_trees = XGBTrees.from_booster(booster)
    forest_trees = IForestTrees.from_forest(forest.arrays)
    with pytest.raises(ValueError, match=rf"\(n, {len(F.FEATURE_NAMES)}\) matrix"):
        score_features(xgb_trees, forest_trees, X[:, :-1])
