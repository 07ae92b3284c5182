"""The leak-free protocol: thresholds and fitted numbers come from valid only, a fold never
sees its held-out type's labels, and the block-bootstrap intervals behave."""

from __future__ import annotations

import numpy as np

from components.evaluate import logic, protocol

HELD_OUT = "scan_avoidance"


def _data(n: int = 3000, seed: int = 5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    subset = np.array(["train", "valid", "test"] * (n // 3), dtype=object)
    labels = rng.random(n) < 0.08
    fraud_type = np.where(labels, "void_abuse", "none").astype(object)
    fraud_type[labels & (rng.random(n) < 0.4)] = HELD_OUT
    X[fraud_type == "void_abuse", 0] += 2.5
    X[fraud_type == HELD_OUT, 1] += 3.0
    cashier = np.array([f"C{i % 40}" for i in range(n)], dtype=object)
    return X, subset, labels, fraud_type, cashier


def _evaluate(X, subset, labels, fraud_type, cashier):
    return logic.evaluate_models(
        X,
        subset,
        labels,
        fraud_type,
        cashier,
        logic.Scorers(
            xgb_margin=lambda r: r[:, 0] + 0.5 * r[:, 1],
            forest_score=lambda r: -np.abs(r).sum(axis=1),
            fold_margins={HELD_OUT: lambda r: r[:, 0]},
        ),
        high_precision_target=0.5,
        medium_recall_target=0.9,
        feature_names=("item_count", "void_count"),  # required fields: nothing to mask
        bootstrap_draws=50,
    )


def _chosen(result) -> dict:
    """Every number fitted or chosen: blend, bands, operating thresholds, fold thresholds."""
    m = result.metrics
    return {
        "blend": result.params.to_dict(),
        "operating": m["threshold_selection"]["threshold_at_1pct_fpr"],
        "folds": {
            t: {k: f[k]["threshold"] for k in ("blend", "xgb", "iforest")}
            | {"share": f["anomaly_share"]}
            for t, f in m["leave_one_type_out"].items()
        },
    }


def test_test_labels_move_no_threshold_and_no_fitted_number():
    X, subset, labels, fraud_type, cashier = _data()
    before = _evaluate(X, subset, labels, fraud_type, cashier)
    test = subset == "test"
    flipped = labels.copy()
    flipped[test] = ~labels[test]  # every test label wrong
    types = fraud_type.copy()
    types[test] = np.where(flipped[test], HELD_OUT, "none")
    after = _evaluate(X, subset, flipped, types, cashier)
    assert _chosen(after) == _chosen(before)
    # ... while what is counted on test does move
    s0, s1 = before.metrics["summary"], after.metrics["summary"]
    assert s0["blend_recall_at_1pct_fpr"] != s1["blend_recall_at_1pct_fpr"]


def test_valid_labels_do_move_the_thresholds():
    """The control for the test above: the thresholds do depend on valid."""
    X, subset, labels, fraud_type, cashier = _data()
    before = _evaluate(X, subset, labels, fraud_type, cashier)
    valid = subset == "valid"
    shifted = X.copy()
    shifted[valid & ~labels] *= 1.5
    after = _evaluate(shifted, subset, labels, fraud_type, cashier)
    assert _chosen(after)["operating"] != _chosen(before)["operating"]


def test_a_fold_never_sees_its_held_out_types_labels():
    """Relabel / move the held-out type's valid rows: the fold's blend and thresholds stay."""
    X, subset, labels, fraud_type, cashier = _data()
    before = _evaluate(X, subset, labels, fraud_type, cashier)
    rows = (subset == "valid") & (fraud_type == HELD_OUT)
    assert rows.any()
    X2, labels2 = X.copy(), labels.copy()
    X2[rows] = 0.0
    labels2[rows] = False
    after = _evaluate(X2, subset, labels2, fraud_type, cashier)
    assert _chosen(after)["folds"] == _chosen(before)["folds"]
    assert _chosen(after)["blend"] != _chosen(before)["blend"]  # production does see them


def test_bootstrap_interval_covers_the_truth_and_shrinks_with_data():
    rng = np.random.default_rng(1)

    def interval(n_cashiers: int) -> dict:
        ids = np.repeat(np.arange(n_cashiers), 10)
        hit = rng.random(ids.size) < 0.7  # true recall 0.7, rows independent
        return protocol.Blocks(ids, draws=200).rate(hit, np.ones(ids.size, bool))

    runs = [interval(30) for _ in range(60)]
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in runs)
    coverage = np.mean([r["ci_low"] <= 0.7 <= r["ci_high"] for r in runs])
    assert coverage >= 0.85  # nominal 95%; 60 runs
    small = np.mean([r["ci_high"] - r["ci_low"] for r in runs])
    large = interval(3000)
    assert large["ci_high"] - large["ci_low"] < small / 5


def test_block_bootstrap_is_wider_than_rows_when_cashiers_differ():
    """One cashier's rows are not independent evidence: clustered hits widen the interval."""
    ids = np.repeat(np.arange(20), 100)
    clustered = ids < 14  # whole cashiers all caught or all missed
    per_row = interval_width(np.arange(ids.size), clustered)
    per_cashier = interval_width(ids, clustered)
    assert per_cashier > 3 * per_row


def interval_width(ids, hit):
    r = protocol.Blocks(ids, draws=200).rate(hit, np.ones(ids.size, bool))
    return r["ci_high"] - r["ci_low"]


def test_rate_of_an_empty_cohort_is_nan_and_draws_are_seeded():
    b = protocol.Blocks(np.array(["a", "b", "c"]))
    r = b.rate(np.array([True, False, True]), np.zeros(3, bool))
    assert r["n"] == 0 and np.isnan(r["value"])
    hit, base = np.array([True, False, True]), np.ones(3, bool)
    assert b.rate(hit, base) == protocol.Blocks(np.array(["a", "b", "c"])).rate(hit, base)


def test_cohorts_split_seen_from_unseen_cashiers():
    masks = protocol.cohort_masks(
        np.array(["A", "B", "C"]),
        np.array(["A"]),
        {"cohort": np.array(["x", "y", "x"])},
        held_out_cashiers=np.array(["B"]),
    )
    assert masks["seen_cashiers"].tolist() == [True, False, False]
    assert masks["unseen_cashiers"].tolist() == [False, True, True]
    assert masks["held_out_cashiers"].tolist() == [False, True, False]
    assert masks["new_cashiers"].tolist() == [False, False, True]
    assert masks["cohort_x"].tolist() == [True, False, True]
