"""The scoring engine's tree walks vs the libraries that trained the models (exact parity)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb
from sklearn.ensemble import IsolationForest

from components.contracts.engine import (
    IForestTrees,
    TreeModelError,
    XGBTrees,
    score_pair_row,
)
from components.contracts.engine.kernels import top_positive, top_positive_batch
from components.contracts.forest import ForestArrays


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 12)) * rng.uniform(0.1, 100, size=12)
    X[rng.random(X.shape) < 0.08] = np.nan  # missing values exercise default_left
    y = ((np.nan_to_num(X[:, 0]) > 0) ^ (rng.random(3000) < 0.1)).astype(int)
    return X, y


@pytest.fixture(scope="module")
def booster(data):
    X, y = data
    return xgb.train(
        {
            "objective": "binary:logistic",
            "max_depth": 6,
            "eta": 0.3,
            "nthread": 1,
            "base_score": 0.3,
        },
        xgb.DMatrix(X, label=y),
        num_boost_round=40,
    )


def test_xgb_margins_equal_booster_margins_with_missing_values(data, booster):
    X, _ = data
    trees = XGBTrees.from_booster(booster)
    expected = booster.predict(xgb.DMatrix(X), output_margin=True)
    np.testing.assert_array_equal(trees.margins(X), expected)
    singles = np.array([trees.margin_row(x) for x in X[:200]], dtype=np.float32)
    np.testing.assert_array_equal(singles, expected[:200])


def _threshold_rows(thresholds: np.ndarray, n_features: int, n: int, seed: int) -> np.ndarray:
    """Rows whose values sit exactly on split thresholds and on their float32 neighbours."""
    rng = np.random.default_rng(seed)
    t = thresholds[np.isfinite(thresholds)].astype(np.float32)
    picks = rng.choice(t, size=(n, n_features))
    step = rng.integers(-1, 2, size=picks.shape)  # the threshold, one ulp below, one above
    below = np.nextafter(picks, np.float32(-np.inf))
    above = np.nextafter(picks, np.float32(np.inf))
    X = np.where(step < 0, below, np.where(step > 0, above, picks)).astype(np.float64)
    X[rng.random(X.shape) < 0.05] = np.nan
    return X


def test_xgb_batch_exact_on_split_thresholds(data, booster):
    """Ties decide the branch: x == split_condition goes right in XGBoost (x < t goes left)."""
    trees = XGBTrees.from_booster(booster)
    X = _threshold_rows(trees.packed.fview[:, 2], data[0].shape[1], 2000, seed=4)
    expected = booster.predict(xgb.DMatrix(X), output_margin=True)
    np.testing.assert_array_equal(trees.margins(X), expected)
    singles = np.array([trees.margin_row(x) for x in X[:300]], dtype=np.float32)
    np.testing.assert_array_equal(singles, expected[:300])


def test_xgb_batch_exact_with_deep_trees_and_stumps(data):
    """Trees with more than 64 leaves span several bitvector words; stumps have one leaf."""
    X, y = data
    deep = xgb.train(
        {"objective": "binary:logistic", "max_depth": 10, "min_child_weight": 0, "nthread": 1},
        xgb.DMatrix(X, label=y),
        num_boost_round=6,
    )
    trees = XGBTrees.from_booster(deep)
    leaves = np.diff(trees.bits.tree_leaves)
    assert leaves.max() > 128  # several words per tree
    np.testing.assert_array_equal(
        trees.margins(X), deep.predict(xgb.DMatrix(X), output_margin=True)
    )
    stumps = xgb.train(
        {"objective": "binary:logistic", "max_depth": 1, "gamma": 1e9, "nthread": 1},
        xgb.DMatrix(X, label=y),
        num_boost_round=3,
    )
    trees = XGBTrees.from_booster(stumps)
    assert np.all(np.diff(trees.bits.tree_leaves) == 1)
    np.testing.assert_array_equal(
        trees.margins(X), stumps.predict(xgb.DMatrix(X), output_margin=True)
    )


@pytest.mark.parametrize("n", [0, 1, 127, 128, 129, 1000])
def test_batch_sizes_around_the_block(data, booster, n):
    X = data[0][:n]
    trees = XGBTrees.from_booster(booster)
    expected = booster.predict(xgb.DMatrix(X), output_margin=True) if n else np.empty(0, np.float32)
    np.testing.assert_array_equal(trees.margins(X), expected)
    model = IsolationForest(n_estimators=5, max_samples=64, random_state=0).fit(
        np.nan_to_num(data[0])
    )
    forest = IForestTrees.from_sklearn(model)
    if n:
        Xf = np.nan_to_num(X)
        np.testing.assert_allclose(forest.scores(Xf), model.score_samples(Xf), rtol=0, atol=1e-9)
    assert forest.scores(np.nan_to_num(X)).shape == (n,)


def test_xgb_path_attributions_match_approx_contribs(data, booster):
    X, _ = data
    trees = XGBTrees.from_booster(booster)
    expected = booster.predict(xgb.DMatrix(X), pred_contribs=True, approx_contribs=True)
    margins, contribs = trees.margins_contribs(X)
    np.testing.assert_allclose(contribs, expected, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(contribs.sum(axis=1), margins, rtol=1e-5, atol=1e-4)
    out = np.empty(X.shape[1] + 1, dtype=np.float32)
    m = trees.margin_contribs_row(X[5], out)
    assert m == margins[5]
    np.testing.assert_array_equal(out, contribs[5])


@pytest.mark.parametrize("base_score", [None, 0.3, 0.0123, 0.47333333, 0.51166666, 0.97])
def test_xgb_base_margin_bit_exact(base_score):
    """XGBoost turns base_score into a margin in float32; a float64 logit is 1 ulp off."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] + rng.normal(size=400) > 0.4).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}
    if base_score is not None:  # None: XGBoost estimates the intercept from the labels
        params["base_score"] = base_score
    booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=2)
    trees = XGBTrees.from_booster(booster)
    np.testing.assert_array_equal(
        trees.margins(X), booster.predict(xgb.DMatrix(X), output_margin=True)
    )


@pytest.mark.parametrize("max_depth", [3, 6, 9])
def test_xgb_batch_attributions_equal_single_row_walk_bit_for_bit(data, max_depth):
    """The batch kernel replays each exit leaf's path credits in the walk's order."""
    X, y = data
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": max_depth, "nthread": 1, "seed": 1},
        xgb.DMatrix(X, label=y),
        num_boost_round=23,  # not a multiple of four: the last group is partial
    )
    trees = XGBTrees.from_booster(booster)
    rows = np.vstack([X[:700], _threshold_rows(trees.packed.fview[:, 2], X.shape[1], 300, 8)])
    margins, contribs = trees.margins_contribs(rows)
    out = np.empty(X.shape[1] + 1, dtype=np.float32)
    for i in range(rows.shape[0]):
        assert trees.margin_contribs_row(rows[i], out) == margins[i]
        np.testing.assert_array_equal(out, contribs[i])
    np.testing.assert_array_equal(margins, trees.margins(rows))


def test_xgb_rejects_multiclass():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgb.DMatrix(X, label=rng.integers(0, 3, 200)),
        2,
    )
    with pytest.raises(TreeModelError, match="objective"):
        XGBTrees.from_booster(booster)


def test_xgb_handles_pruned_trees_with_non_adjacent_children(data, booster):
    """Renumbering must not assume XGBoost's own node order: shuffle the node ids."""
    X, _ = data
    model = json.loads(booster.save_raw("json"))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    n = len(tree["left_children"])
    perm = np.concatenate([[0], np.random.default_rng(3).permutation(np.arange(1, n))])
    inv = np.argsort(perm)
    for key in (
        "base_weights",
        "default_left",
        "loss_changes",
        "split_conditions",
        "split_indices",
        "split_type",
        "sum_hessian",
    ):
        tree[key] = [tree[key][perm[i]] for i in range(n)]
    for key in ("left_children", "right_children", "parents"):
        old = [tree[key][perm[i]] for i in range(n)]
        tree[key] = [int(inv[c]) if 0 <= c < n else c for c in old]
    shuffled = XGBTrees.from_json(json.dumps(model))
    np.testing.assert_array_equal(shuffled.margins(X), XGBTrees.from_booster(booster).margins(X))


@pytest.mark.parametrize("max_features", [1.0, 0.5])
def test_iforest_scores_equal_sklearn(data, max_features):
    X = np.nan_to_num(data[0])
    model = IsolationForest(
        n_estimators=40, max_samples=200, max_features=max_features, random_state=0
    ).fit(X[:2000])
    trees = IForestTrees.from_forest(ForestArrays.from_sklearn(model))
    expected = model.score_samples(X)
    np.testing.assert_allclose(trees.scores(X), expected, rtol=0, atol=1e-9)
    singles = np.array([trees.score_row(x) for x in X[:100]])
    np.testing.assert_allclose(singles, expected[:100], rtol=0, atol=1e-9)


def test_iforest_batch_exact_on_split_thresholds(data):
    """sklearn sends x <= t left in float64; the batch form compares float32 x > t32."""
    X = np.nan_to_num(data[0])
    model = IsolationForest(n_estimators=30, max_samples=256, random_state=5).fit(X)
    trees = IForestTrees.from_sklearn(model)
    thresholds = np.concatenate([e.tree_.threshold for e in model.estimators_])
    Xt = np.nan_to_num(_threshold_rows(thresholds, X.shape[1], 2000, seed=6))
    expected = model.score_samples(Xt)
    np.testing.assert_array_equal(trees.scores(Xt), expected)
    singles = np.array([trees.score_row(x) for x in Xt[:300]])
    np.testing.assert_array_equal(singles, expected[:300])


def test_iforest_from_npz_roundtrip(tmp_path, data):
    X = np.nan_to_num(data[0])
    model = IsolationForest(n_estimators=10, max_samples=64, random_state=1).fit(X)
    ForestArrays.from_sklearn(model).save(tmp_path / "forest.npz")
    trees = IForestTrees.from_forest(ForestArrays.load(tmp_path / "forest.npz"))
    np.testing.assert_allclose(trees.scores(X), model.score_samples(X), rtol=0, atol=1e-9)


def test_score_pair_row_matches_batch_paths(data, booster):
    X = np.nan_to_num(data[0])
    model = IsolationForest(n_estimators=20, max_samples=128, random_state=2).fit(X)
    forest = IForestTrees.from_sklearn(model)
    trees = XGBTrees.from_booster(booster)
    margins, contribs = trees.margins_contribs(X[:50])
    scores = forest.scores(X[:50])
    out = np.empty(X.shape[1] + 1, dtype=np.float32)
    top = np.empty(3, dtype=np.int64)
    for i in range(50):
        m, s, n_top = score_pair_row(X[i], trees, forest, out, top)
        assert m == margins[i] and s == scores[i]
        positive = np.flatnonzero(contribs[i, :-1] > 0)
        want = positive[np.argsort(-contribs[i, positive], kind="stable")][:3]
        assert n_top == len(want)
        np.testing.assert_array_equal(np.sort(top[:n_top]), np.sort(want))
        assert np.all(np.diff(contribs[i, top[:n_top]]) <= 0)


def test_top_positive_ignores_bias_and_non_positive():
    c = np.array([0.5, -1.0, 2.0, 0.0, 0.7, 100.0], dtype=np.float32)  # last = bias
    top = np.empty(4, dtype=np.int64)
    assert top_positive(c, top) == 3
    assert list(top) == [2, 4, 0, -1]
    batch = np.empty((2, 2), dtype=np.int64)
    top_positive_batch(np.stack([c, -c]), batch)
    assert batch.tolist() == [[2, 4], [1, -1]]
