"""Training for missing inputs (``contracts.missing``): seeded copies with whole fields missing,
train only, folds without the held-out type's copies, and a booster that learns absence."""

from __future__ import annotations

import numpy as np
import pytest
from train_synthetic import features_table

from components.contracts.features import FEATURE_NAMES, MASKABLE_FIELDS, MISSING_INPUT_FEATURES
from components.contracts.missing import mask_fields, missing_columns, missing_inputs
from components.contracts.schemas import InputError
from components.contracts.training import training_data
from components.evaluate.logic import roc_auc
from components.train_xgb import logic

FAST = {"n_estimators": 40, "max_depth": 3, "early_stopping_rounds": 5, "nthread": 1}
NO_FOLDS = logic.FoldParams(loto_rounds=0)
FIELD_COLUMNS = {f: set(missing_columns(FEATURE_NAMES, (f,))) for f in MASKABLE_FIELDS}
ALL_OPTIONAL = set(missing_columns(FEATURE_NAMES, MASKABLE_FIELDS))


@pytest.fixture(scope="module")
def data():
    return training_data(features_table(4000, seed=5, fraud_rate=0.12), FEATURE_NAMES)


def test_mask_fields_nans_exactly_the_mapped_columns_of_the_chosen_rows():
    X = np.arange(12.0 * len(FEATURE_NAMES)).reshape(12, -1)
    rows = np.zeros(12, dtype=bool)
    rows[[2, 5]] = True
    out = mask_fields(X, FEATURE_NAMES, ("scan_duration_s", "payment_type"), rows=rows)
    names = {FEATURE_NAMES[j] for j in np.flatnonzero(np.isnan(out[2]))}
    assert names == {
        *MISSING_INPUT_FEATURES["scan_duration_s"],
        *MISSING_INPUT_FEATURES["payment_type"],
    }
    assert not np.isnan(out[~rows]).any() and not np.isnan(X).any()  # a copy


def test_copies_miss_whole_fields_and_the_originals_are_kept(data):
    out = missing_inputs(data.train, FEATURE_NAMES, share=0.5, seed_contract_share=0.4, seed=3)
    n = data.train.n
    np.testing.assert_array_equal(out.X[:n], data.train.X)
    copies = out.X[n:]
    assert 0.4 * n < copies.shape[0] < 0.6 * n
    seven = 0
    for row in np.isnan(copies):
        nan = set(np.flatnonzero(row))
        fields = {f for f, cols in FIELD_COLUMNS.items() if cols <= nan}
        # every NaN column belongs to a wholly missing field: no half-masked field
        assert nan == set().union(*(FIELD_COLUMNS[f] for f in fields))
        seven += nan == ALL_OPTIONAL
    assert 0.35 * len(copies) <= seven < 0.45 * len(copies)  # expected 0.4 + 0.6 / 2**10
    # the copies are copies: labels follow their rows, required-field features unchanged
    assert out.y[n:].sum() > 0 and out.n == len(out.fraud_type)
    kept = np.isfinite(copies)
    assert np.isin(copies[kept], data.train.X).all()


def test_the_same_seed_gives_the_same_copies(data):
    kw = {"share": 0.5, "seed_contract_share": 0.5, "seed": 1}
    a, b = (missing_inputs(data.train, FEATURE_NAMES, **kw) for _ in range(2))
    np.testing.assert_array_equal(a.X, b.X)
    assert missing_inputs(data.train, FEATURE_NAMES, **(kw | {"share": 0})) is data.train


@pytest.mark.parametrize(
    ("field", "value"),
    [("mask_share", 1.5), ("seed_contract_share", -0.1), ("evidence_copies", -1),
     ("evidence_max_factor", 0.5)],
)  # fmt: skip
def test_augmentation_parameters_outside_their_range_are_rejected(field, value):
    with pytest.raises(InputError, match=field):
        logic.AugmentParams(**{field: value})


def test_valid_is_never_augmented_and_folds_drop_the_held_out_copies(data):
    params = logic.XgbParams(**FAST)
    fold = logic.FoldParams(loto_rounds=5, loto_legit_fraction=1.0)
    models = logic.train_models(data, params, fold, logic.AugmentParams(evidence_copies=0))
    assert models.production.n_valid == data.valid.n
    assert models.production.n_train == data.train.n + models.masked_copies > data.train.n
    for name, booster in models.folds.items():
        held_out = int(np.sum(data.train.fraud_type == name))
        # the held-out type's copies leave with it: train minus it, plus copies of the rest
        assert models.dropped_rows[name]["train"] > held_out
        assert booster.n_train == models.production.n_train - models.dropped_rows[name]["train"]


def test_a_booster_trained_with_missing_inputs_ranks_the_seed_view_better(data):
    """Fraud signal on optional-input features and on required ones: without the copies the
    booster learns NaN's branch from nothing; with them it learns to use what was sent."""
    params = logic.XgbParams(**FAST)
    seed_view = mask_fields(data.valid.X, FEATURE_NAMES, MASKABLE_FIELDS)

    def seed_view_auc(augment: logic.AugmentParams | None) -> float:
        import xgboost as xgb

        booster = logic.train_models(data, params, NO_FOLDS, augment).production.booster
        return roc_auc(
            booster.predict(xgb.DMatrix(seed_view, feature_names=list(FEATURE_NAMES))), data.valid.y
        )

    plain = seed_view_auc(None)
    trained = seed_view_auc(logic.AugmentParams(evidence_copies=0))
    assert trained > plain + 0.02, (plain, trained)


# ------------------------------------------------------------------ extrapolation prior


def test_evidence_copies_lie_beyond_every_legitimate_row_and_move_their_z(data):
    from components.contracts.training import Subset
    from components.train_xgb.evidence import EVIDENCE, beyond_legitimate

    names = list(FEATURE_NAMES)
    train = data.train
    X = train.X.copy()
    for count in EVIDENCE.values():  # counts as the world has them: small whole numbers
        X[:, names.index(count)] = np.round(np.abs(X[:, names.index(count)]))
    train = Subset(X, train.y, train.fraud_type)
    out = beyond_legitimate(train, FEATURE_NAMES, copies=2, max_factor=3, seed=2)
    extra = out.take(np.arange(train.n, out.n))
    assert extra.n == 2 * sum(int(np.sum(train.fraud_type == t)) for t in EVIDENCE) > 0
    assert (extra.y == 1).all()
    for fraud_type, count in EVIDENCE.items():
        j, z = names.index(count), names.index(f"z_{count}")
        legit_max = train.X[train.y == 0, j].max()
        rows = extra.fraud_type == fraud_type
        assert (extra.X[rows, j] > legit_max).all()
        assert (extra.X[rows, j] <= 3 * legit_max).all()
        originals = np.repeat(train.X[train.fraud_type == fraud_type], 2, axis=0)
        # the z-score moves the same way as the count, within the kernel's clip
        up = extra.X[rows, j] >= originals[:, j]
        assert up.mean() > 0.5
        assert (extra.X[rows, z][up] >= np.minimum(originals[up, z], 50.0) - 1e-9).all()
        assert (np.abs(extra.X[rows, z]) <= 50.0).all()
        others = [k for k in range(len(names)) if k not in (j, z)]
        np.testing.assert_array_equal(extra.X[rows][:, others], originals[:, others])
    off = beyond_legitimate(train, FEATURE_NAMES, copies=0, max_factor=3, seed=2)
    assert off is train
