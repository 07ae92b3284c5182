"""ForestArrays: the plain-array isolation forest must score exactly like sklearn."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest

from components.contracts.forest import (
    FORMAT_VERSION,
    ForestArrays,
    ForestFormatError,
    average_path_length,
)

TOL = 1e-9


def fit(X: np.ndarray, **kwargs) -> IsolationForest:
    params = {"n_estimators": 20, "max_samples": 64, "random_state": 0, **kwargs}
    return IsolationForest(**params).fit(X)


def threshold_probes(model: IsolationForest, n_features: int, rng) -> np.ndarray:
    """Rows whose values sit exactly on, and one ulp around, split thresholds.

    Thresholds are float64 mid-points of float32 training values; probing them in float64
    and in float32 exercises sklearn's float32 cast before the ``<=`` comparison.
    """
    thresholds = []
    for est, cols in zip(model.estimators_, model.estimators_features_, strict=True):
        tree = est.tree_
        inner = tree.children_left != -1
        for f, t in zip(tree.feature[inner], tree.threshold[inner], strict=True):
            thresholds.append((int(cols[f]) if model._max_features != n_features else int(f), t))
    rows = []
    for feature, t in thresholds[:300]:
        for value in (
            t,
            np.nextafter(t, np.inf),
            np.nextafter(t, -np.inf),
            float(np.float32(t)),
            float(np.nextafter(np.float32(t), np.float32(np.inf))),
            float(np.nextafter(np.float32(t), np.float32(-np.inf))),
        ):
            row = rng.normal(size=n_features)
            row[feature] = value
            rows.append(row)
    return np.asarray(rows)


@pytest.mark.parametrize("max_features", [1.0, 0.6])
@pytest.mark.parametrize("bootstrap", [False, True])
def test_scores_match_sklearn_on_random_and_threshold_rows(max_features, bootstrap):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1500, 7)) * np.array([1, 10, 0.01, 1e4, 1, 3, 1e-6])
    model = fit(X, max_features=max_features, bootstrap=bootstrap)
    forest = ForestArrays.from_sklearn(model)
    probes = np.vstack(
        [
            rng.normal(size=(500, 7)) * np.array([1, 10, 0.01, 1e4, 1, 3, 1e-6]),
            threshold_probes(model, 7, rng),
        ]
    )
    np.testing.assert_allclose(
        forest.score_samples(probes), model.score_samples(probes), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        forest.decision_function(probes), model.decision_function(probes), rtol=0, atol=TOL
    )


def test_threshold_probes_exercise_the_float32_cast():
    """Walking in float64 without sklearn's float32 cast reaches other leaves for some probes,
    so the exactness test above would catch a missing cast."""
    rng = np.random.default_rng(2)
    model = fit(rng.normal(size=(500, 3)))
    forest = ForestArrays.from_sklearn(model)
    probes = threshold_probes(model, 3, rng)

    def leaf(x: np.ndarray, t: int) -> int:
        node = int(forest.tree_offsets[t])
        while forest.left[node] != -1:
            go_left = x[forest.feature[node]] <= forest.threshold[node]
            node = int(forest.left[node] if go_left else forest.right[node])
        return node

    cast = probes.astype(np.float32).astype(np.float64)
    disagreements = sum(
        leaf(x, t) != leaf(x32, t)
        for t in range(forest.n_trees)
        for x, x32 in zip(probes, cast, strict=True)
    )
    assert disagreements > 0


def test_nan_inf_and_out_of_float32_range():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(800, 4))
    X[rng.random(X.shape) < 0.05] = np.nan  # trees learn missing-value directions
    model = fit(X)
    forest = ForestArrays.from_sklearn(model)
    probes = rng.normal(size=(200, 4))
    probes[::7, 0] = np.nan
    probes[1::7, 1] = np.inf
    probes[2::7, 2] = -np.inf
    probes[3::7, 3] = 1e300  # overflows to +inf in float32, like sklearn's cast
    probes[4::7, :] = np.nan
    with np.errstate(over="ignore"):
        expected = model.score_samples(probes)
    np.testing.assert_allclose(forest.score_samples(probes), expected, rtol=0, atol=TOL)


def test_single_training_row_scores_like_sklearn():
    X = np.array([[1.0, 2.0]])
    model = IsolationForest(n_estimators=3, max_samples=1, random_state=0).fit(X)
    forest = ForestArrays.from_sklearn(model)
    probes = np.array([[1.0, 2.0], [50.0, -3.0]])
    np.testing.assert_allclose(forest.score_samples(probes), model.score_samples(probes), atol=TOL)


def test_average_path_length_matches_sklearn():
    from sklearn.ensemble._iforest import _average_path_length

    n = np.array([0, 1, 2, 3, 10, 256, 512, 100000])
    np.testing.assert_array_equal(average_path_length(n), _average_path_length(n))


def test_arrays_are_plain_int32_float64():
    model = fit(np.random.default_rng(4).normal(size=(300, 5)))
    forest = ForestArrays.from_sklearn(model)
    for name in ("feature", "left", "right", "missing_left", "tree_offsets"):
        assert getattr(forest, name).dtype == np.int32, name
    for name in ("threshold", "path_length"):
        assert getattr(forest, name).dtype == np.float64, name
    assert forest.n_trees == 20
    assert forest.max_depth == max(e.tree_.max_depth for e in model.estimators_)
    assert forest.offset == model.offset_


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    model = fit(rng.normal(size=(600, 6)), max_features=0.5)
    forest = ForestArrays.from_sklearn(model)
    path = tmp_path / "model" / "forest.npz"
    forest.save(path)
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz["format_version"]) == FORMAT_VERSION
    loaded = ForestArrays.load(path)
    for name in (
        "feature",
        "threshold",
        "left",
        "right",
        "missing_left",
        "path_length",
        "tree_offsets",
    ):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(forest, name))
    assert (
        loaded.n_features,
        loaded.max_samples,
        loaded.c_max_samples,
        loaded.offset,
        loaded.max_depth,
    ) == (
        forest.n_features,
        forest.max_samples,
        forest.c_max_samples,
        forest.offset,
        forest.max_depth,
    )
    X = rng.normal(size=(100, 6))
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))


def _rewrite(data: bytes, **changes) -> bytes:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        content = {k: npz[k] for k in npz.files}
    content.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del content[key]
    out = io.BytesIO()
    np.savez(out, **content)
    return out.getvalue()


@pytest.fixture(scope="module")
def npz_bytes() -> bytes:
    return ForestArrays.from_sklearn(
        fit(np.random.default_rng(6).normal(size=(300, 3)))
    ).to_npz_bytes()


def test_load_rejects_other_version(tmp_path, npz_bytes):
    path = tmp_path / "forest.npz"
    path.write_bytes(_rewrite(npz_bytes, format_version=np.array(FORMAT_VERSION + 1)))
    with pytest.raises(ForestFormatError, match=r"forest\.npz.*format_version 2"):
        ForestArrays.load(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": np.array("something-else")}, "not a cashier-integrity-forest"),
        ({"threshold": None}, "missing array"),
        ({"left": np.array([1, 2], dtype=np.int32)}, "'left' has 2 nodes"),
        ({"n_features": np.array(1)}, "feature index out of range"),
        ({"feature": np.array([object()], dtype=object)}, "not a readable"),
    ],
)
def test_load_rejects_malformed(npz_bytes, changes, message):
    if "feature" in changes and changes["feature"].dtype == object:
        # An object array can only be stored pickled; load must refuse it (allow_pickle=False).
        buffer = io.BytesIO()
        np.savez(
            buffer,
            feature=changes["feature"],
            format=np.array("cashier-integrity-forest"),
            format_version=np.array(FORMAT_VERSION),
        )
        data = buffer.getvalue()
    else:
        data = _rewrite(npz_bytes, **changes)
    with pytest.raises(ForestFormatError, match=message):
        ForestArrays.from_npz_bytes(data, source="bad.npz")


def test_load_rejects_backward_child_pointer(npz_bytes):
    with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
        left = npz["left"].copy()
    inner = np.flatnonzero(left != -1)
    left[inner[1]] = 0  # a cycle back to the root
    with pytest.raises(ForestFormatError, match="point forward"):
        ForestArrays.from_npz_bytes(_rewrite(npz_bytes, left=left), source="bad.npz")


def test_score_rejects_wrong_width():
    forest = ForestArrays.from_sklearn(fit(np.random.default_rng(7).normal(size=(100, 3))))
    with pytest.raises(ValueError, match=r"\(n, 3\) matrix"):
        forest.score_samples(np.zeros((2, 4)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_rows=st.integers(2, 300),
    n_features=st.integers(1, 6),
    n_estimators=st.integers(1, 8),
    max_samples=st.integers(2, 128),
    max_features=st.sampled_from([1.0, 0.5]),
    scale=st.sampled_from([1e-8, 1.0, 1e6]),
    discrete=st.booleans(),
)
def test_property_matches_sklearn(
    seed, n_rows, n_features, n_estimators, max_samples, max_features, scale, discrete
):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features)) * scale
    if discrete:  # many ties: thresholds between a few repeated values
        X = np.round(X / scale) * scale
    model = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, n_rows),
        max_features=max_features,
        random_state=seed % 1000,
    ).fit(X)
    forest = ForestArrays.from_sklearn(model)
    probes = np.vstack([X[: min(n_rows, 50)], rng.normal(size=(50, n_features)) * scale])
    np.testing.assert_allclose(
        forest.score_samples(probes), model.score_samples(probes), rtol=0, atol=TOL
    )


def test_forest_fitted_on_column_subset_scores_the_wide_matrix():
    """A forest fitted on a few columns, exported with feature_index, scores the full vector."""
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(3)
    wide = rng.normal(size=(800, 12))
    cols = [7, 2, 10]
    model = IsolationForest(n_estimators=25, max_samples=128, random_state=0).fit(wide[:, cols])
    arrays = ForestArrays.from_sklearn(model, feature_index=cols, n_features=12)
    assert arrays.n_features == 12
    assert set(arrays.feature[arrays.feature >= 0]) <= set(cols)
    np.testing.assert_array_equal(arrays.score_samples(wide), model.score_samples(wide[:, cols]))
    with pytest.raises(ValueError, match="feature_index"):
        ForestArrays.from_sklearn(model, feature_index=[1, 2], n_features=12)
