"""Unit tests of the synthetic POS generator (pure logic, tiny seeded data)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts.schemas import FRAUD_TYPES, GENERATED_TRANSACTION, validate_table
from components.datagen.fraud import (
    SCAN_AVOIDANCE_SHARE,
    THEFT_CAP,
    VOID_REVIEW_LIMIT,
    fill,
    fraud_probabilities,
)
from components.datagen.logic import generate, rechunk, summarize
from components.datagen.population import (
    OPENING_HOURS,
    DatagenParams,
    allocate,
    day_row_counts,
    make_world,
    parse_date,
)

SMALL = DatagenParams(
    rows=30_000, days=14, stores=3, cashiers_per_store=10, fraud_rate=0.06, seed=7
)


def table_of(params: DatagenParams) -> pa.Table:
    return pa.concat_tables(list(generate(params)))


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return table_of(SMALL).to_pandas()


def test_output_matches_schema_and_ids_are_unique():
    table = table_of(SMALL)
    assert table.schema.equals(GENERATED_TRANSACTION)
    validate_table(table, GENERATED_TRANSACTION, source="generated")  # raises on a bad value
    assert table.num_rows == SMALL.rows
    ids = table.column("transaction_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert ids[0].count("-") == 2 and len(ids[0].split("-")[2]) == 6


def test_same_seed_same_data_other_seed_other_data():
    a, b = table_of(SMALL), table_of(SMALL)
    assert a.equals(b)
    other = table_of(DatagenParams(**{**SMALL.__dict__, "seed": 8}))
    assert not a.equals(other)


def test_chunk_size_does_not_change_the_data():
    days = list(generate(SMALL))
    whole = pa.concat_tables(days)
    for size in (777, 5_000, 10**9):
        chunks = list(rechunk(iter(days), size))
        assert all(c.num_rows == size for c in chunks[:-1])
        assert pa.concat_tables(chunks).equals(whole)


def test_days_are_time_ordered_and_inside_opening_hours(small):
    ts = small["timestamp"]
    assert ts.is_monotonic_increasing
    start = datetime.combine(SMALL.start_date, datetime.min.time())
    assert ts.min() >= start and ts.max() < start + timedelta(days=SMALL.days)
    hours = ts.dt.hour
    opens = ts.dt.weekday.map(lambda d: OPENING_HOURS[d][0])
    closes = ts.dt.weekday.map(lambda d: OPENING_HOURS[d][1])
    assert ((hours >= opens) & (hours < closes)).all()


def test_weekly_and_daily_seasonality(small):
    per_day = small.groupby(small["timestamp"].dt.date).size()
    weekday = pd.Series(pd.to_datetime(per_day.index).weekday, index=per_day.index)
    assert per_day[weekday == 5].mean() > 1.2 * per_day[weekday.isin([0, 1, 2])].mean()
    hourly = small.groupby(small["timestamp"].dt.hour).size()
    assert hourly[17] > 2 * hourly[8] and hourly[12] > hourly[10]


def test_fraud_rate_close_to_requested(small):
    assert small["is_fraud"].mean() == pytest.approx(SMALL.fraud_rate, abs=0.006)
    assert (small["is_fraud"] == (small["fraud_type"] != "none")).all()


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_fraud_rate_extremes(rate):
    df = table_of(
        DatagenParams(**{**SMALL.__dict__, "rows": 8_000, "fraud_rate": rate})
    ).to_pandas()
    assert df["is_fraud"].mean() == pytest.approx(rate, abs=0.03)


def test_every_fraud_type_present(small):
    counts = small["fraud_type"].value_counts()
    for name in FRAUD_TYPES[1:]:
        assert counts.get(name, 0) >= 30, name


def test_scan_avoidance_only_at_self_checkout_other_fraud_only_staffed(small):
    sco = small["lane_type"] == "self_checkout"
    fraud = small["is_fraud"]
    assert (small.loc[sco & fraud, "fraud_type"] == "scan_avoidance").all()
    assert (small.loc[~sco, "fraud_type"] != "scan_avoidance").all()


def test_self_checkout_attributed_to_a_cashier_of_the_store(small):
    world = make_world(SMALL)
    home = {
        cid: world.store_ids[s]
        for cid, s in zip(world.cashier_ids, world.cashier_store, strict=True)
    }
    assert (small["cashier_id"].map(home) == small["store_id"]).all()
    assert (small["lane_id"].str.split("-").str[0] == small["store_id"]).all()
    assert set(small.loc[small["lane_type"] == "self_checkout", "lane_id"].str[4:7]) == {"SCO"}


def test_cashiers_work_only_while_employed(small):
    day = small["timestamp"].dt.normalize()
    hired = pd.to_datetime(small["cashier_hired_on"])
    left = pd.to_datetime(small["cashier_left_on"])
    assert (hired.isna() | (day >= hired)).all()
    assert (left.isna() | (day < left)).all()


def _staffed_legit(df):
    return df[(df["fraud_type"] == "none") & (df["lane_type"] == "staffed")]


def test_fraud_signatures_lean_but_overlap(small):
    """Every pattern shifts its signal away from honest work, and honest look-alikes
    (supervisor voids, returns, clearance, scale errors) reach into the fraud's range."""
    legit = _staffed_legit(small)
    sco_legit = small[(small["fraud_type"] == "none") & (small["lane_type"] == "self_checkout")]
    by = {name: small[small["fraud_type"] == name] for name in FRAUD_TYPES[1:]}

    voids = by["void_abuse"]
    legit_voids = legit[legit["void_count"] > 0]
    assert (voids["void_count"] > 0).all()
    assert voids["void_amount"].median() > 2 * legit_voids["void_amount"].median()
    assert (legit_voids["void_amount"] > voids["void_amount"].median()).mean() > 0.1
    assert voids["post_payment_void"].mean() > 3 * legit["post_payment_void"].mean() > 0
    per_void = voids["void_amount"] / voids["void_count"]
    assert ((per_void >= VOID_REVIEW_LIMIT - 15) & (per_void < VOID_REVIEW_LIMIT)).mean() > 0.15

    nosale = by["no_sale_abuse"]
    assert (nosale["no_sale_count"] >= 1).all()
    assert (nosale["no_sale_count"] >= 2).mean() > (legit["no_sale_count"] >= 2).mean()
    assert (nosale["no_sale_count"] == 1).mean() > 0.4
    # No-sales are mostly their own transaction: nothing sold.
    assert (nosale["item_count"] == 0).mean() > 0.5
    assert (legit.loc[legit["no_sale_count"] > 0, "item_count"] == 0).mean() > 0.5

    refunds = by["refund_fraud"]
    legit_refunds = legit[legit["refund_amount"] > 0]
    assert (refunds["refund_amount"] > 0).all()
    assert refunds["refund_no_receipt"].mean() > legit_refunds["refund_no_receipt"].mean() > 0.1
    assert (legit_refunds["refund_amount"] > refunds["refund_amount"].median()).mean() > 0.2

    def disc_ratio(df):
        return df["discount_amount"] / (df["total_amount"] + df["discount_amount"] + 1e-9)

    assert disc_ratio(by["discount_abuse"]).median() > 0.2 > disc_ratio(legit).median()
    assert (disc_ratio(legit) > 0.3).mean() > 0.01  # clearance and manager overrides

    scan = by["scan_avoidance"]
    assert scan["weight_variance"].median() > 0.1
    assert (scan["weight_variance"].abs() < 0.1).mean() > 0.2  # kept off the scale
    assert sco_legit["weight_variance"].abs().median() < 0.05
    assert (sco_legit["weight_variance"].abs() > 0.3).mean() > 0.01  # scale errors


def test_staffed_lanes_have_no_scale(small):
    """No staffed-lane weight signal: variance 0 and the basket weight is the catalogue
    weight of what was rung up, so under-ringing leaves no trace in weight per item."""
    staffed = small[small["lane_type"] == "staffed"]
    assert (staffed["weight_variance"] == 0).all()
    legit = _staffed_legit(small)
    sweet = small[small["fraud_type"] == "sweethearting"]

    def kg_per_item(df):
        return (df["basket_weight_kg"] / df["item_count"].clip(lower=1)).median()

    assert kg_per_item(sweet) == pytest.approx(kg_per_item(legit), rel=0.2)


def test_customer_tokens(small):
    """Card payments carry a token; sweethearting goes to a few friends; fake refunds
    often go to the cashier's own card."""
    card = small["payment_type"].isin(["card", "mobile"])
    assert small.loc[card, "customer_token"].notna().all()
    assert small.loc[small["payment_type"] == "cash", "customer_token"].isna().mean() > 0.4
    assert small["customer_token"].dropna().str.fullmatch("[0-9a-f]{16}").all()
    sweet = small[(small["fraud_type"] == "sweethearting") & small["customer_token"].notna()]
    per_pair = sweet.groupby(["cashier_id", "customer_token"]).size()
    assert per_pair.max() >= 2  # the same friend again
    world = make_world(SMALL)
    own = dict(
        zip(
            world.cashier_ids,
            np.asarray(world.customer_tokens)[world.own_token(np.arange(len(world.cashier_ids)))],
            strict=True,
        )
    )
    refunds = small[small["fraud_type"] == "refund_fraud"]
    to_own = refunds["customer_token"] == refunds["cashier_id"].map(own)
    assert to_own.mean() > 0.2
    legit = small[small["fraud_type"] == "none"]
    staff_tokens = set(own.values())
    assert legit["customer_token"].isin(staff_tokens).sum() > 0  # staff shop too


def test_scan_duration_grows_with_items(small):
    staffed = _staffed_legit(small)
    corr = np.corrcoef(staffed["item_count"], staffed["scan_duration_s"])[0, 1]
    assert corr > 0.7
    assert (small["scan_duration_s"] >= 5).all()


def test_allocate_and_day_counts():
    counts = allocate(10, np.array([1.0, 1.0, 1.0]))
    assert counts.sum() == 10 and sorted(counts) == [3, 3, 4]
    days = day_row_counts(SMALL)
    assert days.sum() == SMALL.rows and len(days) == SMALL.days


def test_fraud_probabilities_hit_the_target():
    """At a realistic rate (0.6 %) a thief in a theft shift steals far more often than an
    honest cashier, but still rarely (capped per transaction)."""
    staffed = np.arange(1000) < 800
    dishonest = np.arange(1000) < 80
    p = fraud_probabilities(
        staffed=staffed,
        dishonest_active=dishonest,
        intensity=np.where(dishonest, 1.0, 0.0),
        risky_hour=np.zeros(1000, dtype=bool),
        expected_frauds=6.0,
    )
    assert p.sum() == pytest.approx(6.0)
    assert ((p >= 0) & (p <= 1)).all()
    assert p[80:800].max() * 5 < p[:80].min() <= p[:80].max() <= THEFT_CAP
    assert p[800:].sum() == pytest.approx(6.0 * SCAN_AVOIDANCE_SHARE)


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"rows": 0}, "--rows"),
        ({"rows": -5}, "--rows"),
        ({"days": 0}, "--days"),
        ({"stores": 0}, "--stores"),
        ({"cashiers_per_store": 0}, "--cashiers-per-store"),
        ({"fraud_rate": -0.01}, "--fraud-rate"),
        ({"fraud_rate": 0.51}, "--fraud-rate"),
        ({"fraud_rate": float("nan")}, "--fraud-rate"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_bad_parameters_are_rejected(change, flag):
    with pytest.raises(ValueError, match=flag):
        DatagenParams(**{**SMALL.__dict__, **change}).validate()


def test_parse_date():
    assert parse_date("2026-01-05") == date(2026, 1, 5)
    with pytest.raises(ValueError, match="--start-date"):
        parse_date("05/01/2026")


def test_summary_mentions_every_type():
    lines = summarize({"none": 90, "void_abuse": 10}, 100)
    assert "10.00%" in lines[0]
    assert len(lines) == len(FRAUD_TYPES)


@settings(max_examples=60, deadline=None)
@given(
    n_staffed=st.integers(0, 60),
    n_sco=st.integers(0, 40),
    n_dishonest=st.integers(0, 10),
    rate=st.floats(0.0, 0.5),
)
def test_fraud_probabilities_are_probabilities_summing_to_the_target(
    n_staffed, n_sco, n_dishonest, rate
):
    n = n_staffed + n_sco
    if n == 0:
        return
    staffed = np.arange(n) < n_staffed
    dishonest = np.arange(n) < min(n_dishonest, n_staffed)
    p = fraud_probabilities(
        staffed=staffed,
        dishonest_active=dishonest,
        intensity=np.where(dishonest, 1.5, 0.0),
        risky_hour=np.arange(n) % 3 == 0,
        expected_frauds=rate * n,
    )
    assert ((p >= 0) & (p <= 1)).all()
    assert p.sum() == pytest.approx(rate * n, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(("n", "cap"), [(20, 0.7), (13, 0.6)])
def test_fill_terminates_when_the_target_sits_between_the_capped_sum_and_cap_times_n(n, cap):
    """0.7 * 20 rounds to 14.0 but twenty 0.7s sum to 13.999999999999996: a target between
    them is unreachable, and the search used to double its bound forever."""
    capped_sum = np.full(n, cap).sum()
    target = np.nextafter(cap * n, 0.0)
    assert capped_sum < target < cap * n
    p = fill(np.ones(n), target, cap)
    np.testing.assert_array_equal(p, np.full(n, cap))
