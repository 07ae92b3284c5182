"""The two-channel risk score: the knots make each channel's thresholds exact on the 0-100
score, single and batch scores agree bit for bit, budgets are split on valid as documented,
old one-blend bundles still read, and the anomaly features do not depend on any label."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from train_synthetic import features_table

from components.contracts import blend, channels
from components.contracts.blend import BlendError, BlendParams
from components.contracts.features import ANOMALY_FEATURES, FEATURE_NAMES
from components.evaluate import thresholds
from components.train_iforest.__main__ import build_parser, fitter

KNOTS = channels.AnomalyChannel(
    knots_z=(2.0, 5.0, 5.0, 9.0), knots_score=(10.0, 20.0, 35.0, 60.0), share=0.25
)


@given(st.floats(-30, 60, allow_nan=False))
@settings(max_examples=300, deadline=None)
def test_anomaly_score_crosses_each_knot_exactly_where_z_does(z):
    buf = np.empty(1)
    one = channels.anomaly_score_one(z, KNOTS, buf)
    assert one == channels.anomaly_score(np.array([z]), KNOTS)[0]  # bit for bit
    assert 0.0 <= one <= 100.0
    for zk, sk in zip(KNOTS.knots_z, KNOTS.knots_score, strict=True):
        assert (one >= sk) == (z >= zk)


def test_anomaly_score_is_monotone():
    z = np.linspace(-20, 40, 20001)
    assert np.all(np.diff(channels.anomaly_score(z, KNOTS)) >= 0)


def _fitted(seed: int = 0, n: int = 6000):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.05
    margin = rng.normal(-4, 1.5, n) + 4.0 * y
    forest = -(0.45 + 0.03 * rng.standard_normal(n)) - 0.05 * (y & (rng.random(n) < 0.5))
    params, info = thresholds.fit_channels(
        valid_margin=margin,
        valid_iforest_score=forest,
        valid_labels=y,
        train_iforest_score=-(0.45 + 0.03 * rng.standard_normal(n)),
        high_precision_target=0.6,
        medium_recall_target=0.9,
    )
    return params, info, margin, forest, y


def test_budget_is_split_on_valid_and_bands_follow_either_channel():
    params, info, margin, forest, y = _fitted()
    assert params.extra["anomaly_share"] in thresholds.SHARE_GRID
    risk = blend.risk_score(margin, forest, params)
    sup, anom = blend.channel_scores(margin, forest, params)
    np.testing.assert_array_equal(risk, np.maximum(sup, anom))
    t_op = params.extra["threshold_at_1pct_fpr"]
    # the union of both channels stays inside the 1% valid false-alarm budget ...
    assert np.sum(risk[~y] >= t_op) <= np.floor(0.01 * np.sum(~y))
    # ... of which the anomaly channel holds at most its share
    assert np.sum(anom[~y] >= t_op) <= np.floor(0.01 * params.extra["anomaly_share"] * (~y).sum())
    points = info["channel_thresholds"]
    z = blend.iforest_z(forest, params)
    for band, cut in (("high", params.thresholds.high), ("medium", params.thresholds.medium)):
        either = (sup >= cut) | (z >= points[band]["anomaly_z"])
        np.testing.assert_array_equal(risk >= cut, either)
    assert np.any((anom >= params.thresholds.high) & (sup < params.thresholds.high))


def test_single_row_scores_equal_the_batch_bit_for_bit():
    params, _, margin, forest, _ = _fitted(seed=1, n=3000)
    batch = blend.risk_score(margin, forest, params)
    buf = np.empty(1)
    ones = [
        blend.risk_score_one(float(m), float(s), params, buf)
        for m, s in zip(margin, forest, strict=True)
    ]
    np.testing.assert_array_equal(np.asarray(ones), batch)


def test_blend_json_round_trips_and_old_one_blend_bundles_still_score():
    params, *_ = _fitted(n=2000)
    data = params.to_dict()
    assert data["blend_version"] == 2
    assert BlendParams.from_dict(data) == params
    old = blend.fit_blend(
        valid_margin=np.r_[np.zeros(50), np.ones(50)],
        valid_iforest_score=np.r_[np.full(50, -0.4), np.full(50, -0.6)],
        valid_labels=np.r_[np.zeros(50), np.ones(50)],
        train_iforest_score=np.linspace(-0.6, -0.3, 100),
    )
    v1 = old.to_dict()
    assert v1["blend_version"] == 1 and "anomaly_channel" not in v1
    again = BlendParams.from_dict(v1)
    assert again.anomaly is None
    m, s = np.array([0.0, 1.0]), np.array([-0.4, -0.6])
    expected = 100.0 / (1.0 + np.exp(-(old.xgb_weight * m + old.iforest_weight
                                       * blend.iforest_z(s, old) + old.intercept)))  # fmt: skip
    np.testing.assert_allclose(blend.risk_score(m, s, again), expected, rtol=1e-12)
    with pytest.raises(BlendError, match="anomaly_channel"):
        BlendParams.from_dict({**data, "anomaly_channel": None})
    with pytest.raises(BlendError, match="not supported"):
        BlendParams.from_dict({**data, "blend_version": 3})
    with pytest.raises(BlendError, match="knots"):
        BlendParams.from_dict({**data, "anomaly_channel": {**data["anomaly_channel"],
                                                           "knots_score": [50.0, 40.0, 60.0]}})  # fmt: skip


def test_fired_names_the_channel_that_reached_the_level():
    assert channels.fired(80.0, 10.0, 70.0) == channels.SUPERVISED
    assert channels.fired(10.0, 80.0, 70.0) == channels.ANOMALY
    assert channels.fired(80.0, 75.0, 70.0) == channels.BOTH
    assert channels.fired(80.0, None, 70.0) == channels.SUPERVISED


def test_anomaly_features_and_forest_ignore_every_types_labels():
    """The anomaly features are chosen by a rule that reads no label: scrambling any fraud
    type's labels (which rows carry it, and whether they count as fraud) leaves the chosen
    columns and the fitted forest unchanged."""
    assert set(ANOMALY_FEATURES) <= set(FEATURE_NAMES)
    table = features_table(1500, seed=4, signal=5.0)
    args = build_parser().parse_args(["--in-features", "x", "--out-model", "y",
                                      "--n-estimators", "10", "--max-samples", "64"])  # fmt: skip
    base = fitter(args)(table, "x")
    types = table.column("fraud_type").to_numpy(zero_copy_only=False)
    rng = np.random.default_rng(0)
    for name in sorted(set(types.tolist()) - {"none"}):
        scrambled = np.where(types == name, "none", types).astype(object)
        scrambled[rng.random(types.size) < 0.05] = name  # the type now sits on random rows
        fraud = pa.array(scrambled != "none")
        t2 = table.set_column(table.schema.get_field_index("fraud_type"), "fraud_type",
                              pa.array(scrambled.tolist(), pa.string()))  # fmt: skip
        t2 = t2.set_column(t2.schema.get_field_index("is_fraud"), "is_fraud",
                           pc.cast(fraud, t2.schema.field("is_fraud").type))  # fmt: skip
        again = fitter(args)(t2, "x")
        assert again.meta["feature_names"] == base.meta["feature_names"] == list(ANOMALY_FEATURES)
        np.testing.assert_array_equal(again.forest.arrays.threshold, base.forest.arrays.threshold)
        np.testing.assert_array_equal(again.forest.arrays.feature, base.forest.arrays.feature)


def test_a_type_only_the_forest_sees_is_caught_by_two_channels_not_by_one_blend():
    """The reason for two channels: fitted on labelled (known) types only, a logistic blend
    puts ~no weight on a forest that does not separate them, and never flags a novel type the
    forest does isolate; the anomaly channel's own budget does."""
    rng = np.random.default_rng(3)
    n = 20000
    y = rng.random(n) < 0.03
    margin = rng.normal(-4, 1, n) + 5.0 * y  # the booster knows the labelled types
    forest = -0.45 + 0.02 * rng.standard_normal(n)  # the forest does not separate them
    novel_margin, novel_forest = rng.normal(-4, 1, 200), np.full(200, -0.75)
    two, _ = thresholds.fit_channels(
        valid_margin=margin, valid_iforest_score=forest, valid_labels=y,
        train_iforest_score=forest, high_precision_target=0.8, medium_recall_target=0.9,
    )  # fmt: skip
    caught = blend.risk_score(novel_margin, novel_forest, two) >= two.extra["threshold_at_1pct_fpr"]
    one = blend.fit_blend(valid_margin=margin, valid_iforest_score=forest, valid_labels=y,
                          train_iforest_score=forest)  # fmt: skip
    t_one = thresholds.threshold_at_fpr(blend.risk_score(margin, forest, one), y)
    assert caught.mean() == 1.0
    assert (blend.risk_score(novel_margin, novel_forest, one) >= t_one).mean() < 0.05
    # and the known types keep most of their recall
    known = blend.risk_score(margin, forest, two)[y] >= two.extra["threshold_at_1pct_fpr"]
    assert known.mean() > 0.9
