"""train-iforest logic: unsupervised fit, array form, score statistics, skops loading."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import skops.io
from train_synthetic import features_table

from components.contracts.features import FEATURE_NAMES, LABEL_COLUMNS
from components.contracts.forest import ForestArrays
from components.contracts.training import training_data
from components.train_iforest import logic

FAST = logic.IForestParams(n_estimators=25, max_samples=128, seed=3, n_jobs=1)


@pytest.fixture(scope="module")
def data():
    return training_data(features_table(3000, seed=21, signal=6.0), FEATURE_NAMES)


@pytest.fixture(scope="module")
def forest(data) -> logic.TrainedForest:
    return logic.train_forest(data, FAST)


def test_arrays_reproduce_model_scores(data, forest):
    assert forest.arrays.n_trees == 25 and forest.arrays.max_samples == 128
    np.testing.assert_allclose(
        forest.arrays.score_samples(data.valid.X),
        forest.model.score_samples(data.valid.X),
        rtol=0,
        atol=1e-9,
    )


def test_labels_are_not_used_for_fitting(data, forest):
    flipped = type(data.train)(data.train.X, 1 - data.train.y, data.train.fraud_type[::-1])
    again = logic.fit_forest(flipped, FAST)
    np.testing.assert_array_equal(
        ForestArrays.from_sklearn(again).threshold, forest.arrays.threshold
    )


def test_seed_changes_the_forest(data, forest):
    other = logic.fit_forest(
        data.train, logic.IForestParams(n_estimators=25, max_samples=128, seed=4, n_jobs=1)
    )
    assert not np.array_equal(
        other.score_samples(data.valid.X), forest.model.score_samples(data.valid.X)
    )


def test_fraud_rows_are_more_anomalous(forest):
    # Fraud rows in the synthetic table are outliers in 3 of the features: -score ranks them
    # above legitimate rows (well above chance; random features per split dilute it).
    assert forest.valid_metrics["roc_auc"] > 0.65
    assert 0 <= forest.valid_metrics["recall_at_1pct_fpr"] <= 1


def test_score_stats_are_ordered(forest):
    stats = forest.score_stats["valid"]
    quantiles = [stats[f"q{q * 100:g}"] for q in logic.SCORE_QUANTILES]
    assert stats["min"] <= quantiles[0] and quantiles == sorted(quantiles)
    assert quantiles[-1] <= stats["max"] < 0  # sklearn scores are negative
    assert stats["std"] > 0


def test_flat_metrics_are_numbers(forest):
    flat = logic.flat_metrics(forest)
    assert {"valid_pr_auc", "valid_roc_auc", "valid_recall_at_1pct_fpr", "train_score_mean"} <= set(
        flat
    )
    assert all(isinstance(v, float) for v in flat.values())


def test_max_samples_is_capped_at_training_rows(data):
    small = type(data.train)(data.train.X[:50], data.train.y[:50], data.train.fraud_type[:50])
    model = logic.fit_forest(small, logic.IForestParams(n_estimators=3, max_samples=512, n_jobs=1))
    assert model.max_samples_ == 50


def test_invalid_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="max_samples=1"):
        logic.IForestParams(max_samples=1)


def test_no_fraud_in_valid_gives_nan_metrics_not_an_error():
    table = features_table(1500, seed=5)
    label = LABEL_COLUMNS[0]
    table = table.set_column(
        table.schema.get_field_index(label),
        label,
        pa.array(np.zeros(table.num_rows, dtype=bool)),
    )
    data = training_data(table, FEATURE_NAMES, require_positives=False)
    forest = logic.train_forest(data, FAST)
    assert np.isnan(forest.valid_metrics["pr_auc"])
    assert "valid_pr_auc" in logic.flat_metrics(forest)
    assert int(pc.sum(table.column(label)).as_py() or 0) == 0


def test_skops_loads_only_with_the_explicit_trusted_list(forest, tmp_path, data):
    path = tmp_path / "iforest.skops"
    skops.io.dump(forest.model, path)
    untrusted = skops.io.get_untrusted_types(file=path)
    assert set(untrusted) <= set(logic.SKOPS_TRUSTED_TYPES)
    with pytest.raises(skops.io.exceptions.UntrustedTypesFoundException):
        skops.io.load(path)
    loaded = skops.io.load(path, trusted=list(logic.SKOPS_TRUSTED_TYPES))
    np.testing.assert_array_equal(
        loaded.score_samples(data.valid.X), forest.model.score_samples(data.valid.X)
    )
