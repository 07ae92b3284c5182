"""Missing is missing: an optional field a client did not send is NaN, in exactly the features
``MISSING_INPUT_FEATURES`` names, in requests and tables alike; history stays finite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts import features as F
from components.contracts.schemas import REQUIRED_FIELDS, TRANSACTION_FIELDS
from tests.unit.test_features import make_tx

TX = make_tx(60, seed=11)
STATE = F.ProfileState()
PRIOR = STATE.advance(F.raw_matrix(TX), TX["cashier_id"].to_numpy(), TX["store_id"].to_numpy())
FULL = F.compute_features(F.raw_matrix(TX), PRIOR)


def mask(features: np.ndarray, fields) -> np.ndarray:
    """``features`` with every column the map ties to ``fields`` set to NaN."""
    out = features.copy()
    for field in fields:
        out[:, [F.Feat[name] for name in F.MISSING_INPUT_FEATURES[field]]] = np.nan
    return out


def without(record: dict, fields) -> dict:
    return {k: v for k, v in record.items() if k not in fields}


@settings(max_examples=60, deadline=None)
@given(
    row=st.integers(0, len(TX) - 1),
    fields=st.sets(st.sampled_from(F.MASKABLE_FIELDS)),
)
def test_a_request_without_fields_equals_the_masked_features(row, fields):
    record = without(TX.iloc[row].to_dict(), fields)
    got = F.compute_features(F.raw_row(record), PRIOR[row])
    np.testing.assert_array_equal(got, mask(FULL[row : row + 1], fields))


@settings(max_examples=20, deadline=None)
@given(fields=st.sets(st.sampled_from(F.MASKABLE_FIELDS), min_size=1), seed=st.integers(0, 99))
def test_null_table_cells_equal_the_masked_features(fields, seed):
    """Nulls in a table (each field missing on a random half of the rows) mask those rows."""
    rng = np.random.default_rng(seed)
    tx = TX.astype(object)
    expected = FULL.copy()
    for field in fields:
        rows = rng.random(len(tx)) < 0.5
        tx.loc[rows, field] = None
        expected[rows] = mask(expected[rows], [field])
    got = F.compute_features(F.raw_matrix(tx), PRIOR)
    np.testing.assert_array_equal(got, expected)


def test_an_absent_optional_column_is_missing_everywhere():
    fields = ("void_amount", "scan_duration_s")
    got = F.compute_features(F.raw_matrix(TX.drop(columns=list(fields))), PRIOR)
    np.testing.assert_array_equal(got, mask(FULL, fields))


def test_the_map_covers_exactly_the_optional_fields_that_reach_a_feature():
    """A seven-field request: the NaN features are exactly the map's, nothing else is NaN."""
    seven = {k: TX.iloc[0][k] for k in REQUIRED_FIELDS}
    got = F.compute_features(F.raw_row(seven), PRIOR[0])[0]
    expected = {n for names in F.MISSING_INPUT_FEATURES.values() for n in names}
    assert {F.FEATURE_NAMES[j] for j in np.flatnonzero(np.isnan(got))} == expected
    optional = {f.name for f in TRANSACTION_FIELDS if not f.required}
    assert set(F.MASKABLE_FIELDS) <= optional


def test_missing_behaviours_add_nothing_to_history():
    """The profile rule: a row counts, a behaviour computed from an unsent field adds 0, so
    batch and online statistics stay finite and agree."""
    seven = TX[["timestamp", "store_id", *REQUIRED_FIELDS]]
    stats = F.behaviour_stats(F.raw_matrix(seven))
    assert np.isfinite(stats).all()
    full = F.behaviour_stats(F.raw_matrix(TX))
    sent = [F.Behaviour[b] for b in ("void_count", "no_sale_count", "abs_weight_variance")]
    unsent = [k for k in range(len(F.BEHAVIOURS)) if k not in sent]
    for block in (F.STAT_SUM, F.STAT_SUMSQ):
        np.testing.assert_array_equal(
            stats[:, [block + k for k in sent]], full[:, [block + k for k in sent]]
        )
        assert (stats[:, [block + k for k in unsent]] == 0).all()
    np.testing.assert_array_equal(stats[:, F.STAT_N], 1.0)
    for record in seven.to_dict("records")[:5]:
        np.testing.assert_array_equal(
            F.behaviour_stats(F.raw_row(record))[0],
            F.behaviour_stats(F.raw_matrix(pd.DataFrame([record])))[0],
        )


def test_an_unknown_payment_type_is_still_rejected_in_tables():
    tx = TX.head(3).astype(object)
    tx.loc[1, "payment_type"] = "bitcoin"
    with pytest.raises(ValueError, match="bitcoin"):
        F.raw_matrix(tx)
