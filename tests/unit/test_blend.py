"""The one blend: scoring, levels, JSON round trip, fitting and PSI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts import blend
from components.contracts.blend import BlendError, BlendParams, Thresholds
from components.contracts.schemas import ACTIONS


def _params(**kw) -> BlendParams:
    base = dict(
        xgb_weight=1.0,
        iforest_weight=0.5,
        intercept=-1.0,
        iforest_center=0.4,
        iforest_scale=0.05,
        thresholds=Thresholds(high=80.0, medium=20.0),
        reference_histogram=tuple([0.05] * 20),
    )
    base.update(kw)
    return BlendParams(**base)


def test_risk_score_matches_formula():
    p = _params()
    m = np.array([-3.0, 0.0, 2.5])
    s = np.array([-0.35, -0.5, -0.7])
    z = (-s - 0.4) / 0.05
    expected = 100 / (1 + np.exp(-(1.0 * m + 0.5 * z - 1.0)))
    np.testing.assert_allclose(blend.risk_score(m, s, p), expected, rtol=1e-12)


def test_single_element_and_extremes_are_finite():
    p = _params()
    one = blend.risk_score(np.array([0.3]), np.array([-0.5]), p)
    assert one.shape == (1,)
    extreme = blend.risk_score(np.array([1e6, -1e6]), np.array([-0.5, -0.5]), p)
    assert extreme[0] == pytest.approx(100.0)
    assert extreme[1] == pytest.approx(0.0)
    assert np.all(np.isfinite(extreme))


@settings(max_examples=200, deadline=None)
@given(st.floats(-60, 60), st.floats(-1.0, 0.0), st.floats(-5, 5), st.floats(1e-3, 10))
def test_risk_score_one_equals_the_batch_score_bit_for_bit(margin, forest, weight, scale):
    """The single-request path (scalar arithmetic) and the batch path give the same float."""
    p = _params(iforest_weight=weight, iforest_scale=scale)
    batch = blend.risk_score(np.array([margin, 0.0]), np.array([forest, -0.5]), p)
    buf = np.empty(1)
    assert blend.risk_score_one(margin, forest, p, buf) == batch[0]
    assert blend.risk_score_one(0.0, -0.5, p, buf) == batch[1]


def test_shape_mismatch_is_an_error():
    with pytest.raises(BlendError, match="shape"):
        blend.risk_score(np.zeros(2), np.zeros(3), _params())


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-50, 50), min_size=1, max_size=20),
    st.floats(-1.0, 0.0),
)
def test_score_in_range_and_monotone_in_margin(margins, forest):
    p = _params()
    m = np.sort(np.asarray(margins))
    scores = blend.risk_score(m, np.full(m.shape, forest), p)
    assert np.all((scores >= 0) & (scores <= 100))
    assert np.all(np.diff(scores) >= 0)


def test_more_anomalous_forest_score_raises_risk_when_weight_positive():
    p = _params()
    normal, odd = blend.risk_score(np.zeros(2), np.array([-0.4, -0.7]), p)
    assert odd > normal


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0.0, "Low Risk"),
        (19.99, "Low Risk"),
        (20.0, "Medium Risk"),
        (79.9, "Medium Risk"),
        (80.0, "High Risk"),
        (100.0, "High Risk"),
    ],
)
def test_risk_level_boundaries(score, level):
    t = Thresholds(high=80.0, medium=20.0)
    assert blend.risk_level(score, t) == level
    assert blend.risk_level(score, {"high": 80, "medium": 20}) == level
    assert blend.risk_levels(np.array([score]), t)[0] == level
    assert blend.action(level) == ACTIONS[level]


def test_thresholds_must_be_ordered():
    with pytest.raises(BlendError, match="medium < high"):
        Thresholds(high=10.0, medium=10.0)


def test_json_round_trip():
    p = _params(extra={"fit_rows": 10})
    text = json.dumps(p.to_dict())
    back = BlendParams.from_dict(json.loads(text))
    assert back == p


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("xgb_weight"), "xgb_weight"),
        (lambda d: d.update(iforest_scale=0.0), "iforest_scale"),
        (lambda d: d.update(blend_version=99), "blend_version"),
        (lambda d: d.update(thresholds={"high": 5, "medium": 50}), "medium < high"),
        (lambda d: d["reference_histogram"].update(fractions=[1.0]), "20 bins"),
    ],
)
def test_from_dict_rejects_bad_content(mutate, message):
    d = _params().to_dict()
    mutate(d)
    with pytest.raises(BlendError, match=message):
        BlendParams.from_dict(d)


def test_fit_blend_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    n = 40_000
    margin = rng.normal(-2, 2, n)
    train_forest = -(0.45 + 0.04 * rng.standard_normal(n))
    forest = -(0.45 + 0.04 * rng.standard_normal(n))
    center, scale = blend.robust_center_scale(-train_forest)
    z = (-forest - center) / scale
    true_logit = 0.8 * margin + 1.5 * z - 2.0
    y = rng.random(n) < 1 / (1 + np.exp(-true_logit))
    p = blend.fit_blend(
        valid_margin=margin,
        valid_iforest_score=forest,
        valid_labels=y,
        train_iforest_score=train_forest,
    )
    assert p.iforest_center == pytest.approx(center)
    assert p.xgb_weight == pytest.approx(0.8, abs=0.08)
    assert p.iforest_weight == pytest.approx(1.5, abs=0.12)
    assert p.intercept == pytest.approx(-2.0, abs=0.15)
    # Calibrated: mean predicted probability matches the positive rate.
    scores = blend.risk_score(margin, forest, p)
    assert scores.mean() / 100 == pytest.approx(y.mean(), abs=0.005)


def test_fit_blend_separable_data_stays_finite():
    margin = np.array([-5.0, -4.0, 4.0, 5.0] * 10)
    forest = np.full(margin.shape, -0.5)
    y = margin > 0
    p = blend.fit_blend(
        valid_margin=margin,
        valid_iforest_score=forest,
        valid_labels=y,
        train_iforest_score=forest + np.linspace(-0.01, 0.01, forest.size),
    )
    assert np.isfinite(p.xgb_weight) and p.xgb_weight > 0


def test_fit_blend_single_class_is_an_error():
    with pytest.raises(BlendError, match="single class"):
        blend.fit_blend(
            valid_margin=np.zeros(5),
            valid_iforest_score=np.zeros(5),
            valid_labels=np.zeros(5),
            train_iforest_score=np.linspace(0, 1, 5),
        )


def test_psi_zero_for_same_distribution_and_large_for_shift():
    rng = np.random.default_rng(1)
    ref_scores = rng.beta(1, 20, 50_000) * 100
    ref = blend.score_histogram(ref_scores)
    assert sum(ref) == pytest.approx(1.0)
    same = blend.psi(ref, rng.beta(1, 20, 50_000) * 100)
    shifted = blend.psi(ref, rng.beta(5, 5, 5_000) * 100)
    assert same < 0.01
    assert shifted > 0.25


def test_histogram_includes_100_in_last_bin():
    hist = blend.score_histogram(np.array([100.0, 0.0]))
    assert hist[-1] == 0.5 and hist[0] == 0.5


def test_fit_blend_converges_with_large_margins_and_rare_positives():
    """Plain Newton overshoots on this (well separated margins, 2% positives) and lands on a
    negative margin weight; the damped fit must match an independent solver."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    n = 30_000
    y = rng.random(n) < 0.02
    margin = np.where(y, rng.normal(4.0, 0.8, n), rng.normal(-5.0, 1.0, n))
    forest = -(0.36 + 0.025 * rng.standard_normal(n) + 0.04 * y)
    p = blend.fit_blend(
        valid_margin=margin,
        valid_iforest_score=forest,
        valid_labels=y,
        train_iforest_score=forest[~y],
        l2=1e-4,
    )
    z = blend.iforest_z(forest, p)
    # Same objective: sklearn's 0.5 |w|^2 + C * logloss with C = 1 / (l2 * n).
    ref = LogisticRegression(C=1 / (1e-4 * n), tol=1e-12, max_iter=10_000)
    ref.fit(np.column_stack([margin, z]), y)
    assert p.xgb_weight == pytest.approx(ref.coef_[0][0], rel=1e-3)
    assert p.iforest_weight == pytest.approx(ref.coef_[0][1], rel=1e-3, abs=1e-3)
    assert p.intercept == pytest.approx(ref.intercept_[0], rel=1e-3)
    assert p.xgb_weight > 1.0
