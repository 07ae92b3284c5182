"""Unit tests of the time-based split (pure logic on tiny inline tables)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts.layout import SUBSETS, TimeBoundaries, assign_subset, time_boundaries
from components.contracts.schemas import (
    COHORT_LABELS,
    GENERATED_TRANSACTION,
    LABELLED_TRANSACTION,
    LIVE_LABELS,
    RAW_TRANSACTION,
    validate_table,
)
from components.datagen.logic import DatagenParams, generate
from components.split.logic import live_labels, live_stream, split_by_time, with_date_partition

T0 = datetime(2026, 1, 5)


def b_default(days: int = 20) -> TimeBoundaries:
    return time_boundaries(
        T0 + timedelta(hours=7), T0 + timedelta(days=days - 1, hours=21),
        live_days=3, valid_days=4, test_days=5,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tx() -> pa.Table:
    params = DatagenParams(rows=3_000, days=16, stores=2, cashiers_per_store=5, seed=3)
    return pa.concat_tables(list(generate(params)))


def test_time_boundaries_are_midnights_counted_back_from_the_last_day():
    b = b_default(20)  # 2026-01-05 .. 2026-01-24
    assert b.live_end == datetime(2026, 1, 25)
    assert b.historic_end == datetime(2026, 1, 22)
    assert b.valid_end == datetime(2026, 1, 17)
    assert b.train_end == datetime(2026, 1, 13)
    assert TimeBoundaries.from_json(b.to_json()) == b
    assert b.to_json()["train_end"] == "2026-01-13T00:00:00"


def test_time_boundaries_minimum_period_and_too_short():
    ok = time_boundaries(
        T0, T0 + timedelta(days=12, hours=23), live_days=3, valid_days=4, test_days=5
    )
    assert ok.train_end == T0 + timedelta(days=1)  # exactly one training day
    with pytest.raises(ValueError, match=r"covers 12 day\(s\).*too short"):
        time_boundaries(
            T0, T0 + timedelta(days=11, hours=23), live_days=3, valid_days=4, test_days=5
        )


@pytest.mark.parametrize("flag", ["live_days", "valid_days", "test_days"])
def test_time_boundaries_reject_non_positive_days(flag):
    kwargs = {"live_days": 3, "valid_days": 4, "test_days": 5, flag: 0}
    with pytest.raises(ValueError, match="--" + flag.replace("_", "-")):
        time_boundaries(T0, T0 + timedelta(days=30), **kwargs)


def test_assign_subset_edges_are_half_open():
    b = b_default(20)
    one_us = timedelta(microseconds=1)
    ts = pa.array(
        [b.train_end - one_us, b.train_end, b.valid_end - one_us, b.valid_end,
         b.historic_end - one_us, b.historic_end, b.live_end - one_us],
        type=pa.timestamp("us"),
    )  # fmt: skip
    assert assign_subset(ts, b).tolist() == [
        "train", "valid", "valid", "test", "test", "live", "live",
    ]  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 20 * 86_400 - 1), min_size=1, max_size=200))
def test_subsets_follow_time_order(seconds):
    b = b_default(20)
    ts = np.array(sorted(seconds), dtype="timedelta64[s]") + np.datetime64(T0, "us")
    codes = [SUBSETS.index(s) for s in assign_subset(pa.array(ts), b)]
    assert codes == sorted(codes)  # later transactions never land in an earlier subset


def test_split_by_time_no_overlap_nothing_lost(tx):
    ts = tx.column("timestamp")
    b = time_boundaries(
        ts.to_pylist()[0], ts.to_pylist()[-1], live_days=3, valid_days=4, test_days=5
    )
    historic, live = split_by_time(tx, b)
    assert historic.num_rows + live.num_rows == tx.num_rows
    assert historic.num_rows and live.num_rows
    h_max = max(historic.column("timestamp").to_pylist())
    l_min = min(live.column("timestamp").to_pylist())
    assert h_max < b.historic_end <= l_min
    subsets = set(assign_subset(historic.column("timestamp"), b))
    assert subsets == {"train", "valid", "test"}
    ids = set(historic.column("transaction_id").to_pylist())
    assert not ids & set(live.column("transaction_id").to_pylist())


def test_split_by_time_rejects_rows_after_live_end(tx):
    b = b_default(5 + 3 + 4 + 1)
    late = tx.slice(0, 1).set_column(
        1, "timestamp", pa.array([b.live_end], type=pa.timestamp("us"))
    )
    with pytest.raises(ValueError, match="after live_end"):
        split_by_time(late, b)


def test_live_stream_has_raw_fields_only_in_time_order(tx):
    shuffled = tx.take(np.random.default_rng(0).permutation(tx.num_rows))
    stream = live_stream(shuffled)
    assert stream.schema.equals(RAW_TRANSACTION)
    assert "is_fraud" not in stream.column_names and "fraud_type" not in stream.column_names
    ts = stream.column("timestamp").to_pylist()
    assert ts == sorted(ts)
    labels = live_labels(shuffled)
    assert labels.schema.equals(LIVE_LABELS)
    assert labels.column("transaction_id").equals(stream.column("transaction_id"))
    validate_table(stream, RAW_TRANSACTION, source="stream")


def test_live_labels_carry_the_cohort_labels_and_older_data_reads_them_as_null(tx):
    labels = live_labels(tx)
    by_id = dict(zip(tx.column("transaction_id").to_pylist(), tx.to_pylist(), strict=True))
    for row in labels.to_pylist():
        assert {c: row[c] for c in COHORT_LABELS.names} == {
            c: by_id[row["transaction_id"]][c] for c in COHORT_LABELS.names
        }
    assert labels.column("cashier_turned_on").null_count < labels.num_rows  # some thieves
    older = validate_table(tx.select(LABELLED_TRANSACTION.names), GENERATED_TRANSACTION, source="x")
    assert all(live_labels(older).column(c).null_count == tx.num_rows for c in COHORT_LABELS.names)


def test_with_date_partition(tx):
    out = with_date_partition(tx)
    dates = out.column("date").to_pylist()
    expected = [t.strftime("%Y-%m-%d") for t in tx.column("timestamp").to_pylist()]
    assert dates == expected
    validate_table(out, LABELLED_TRANSACTION, source="x")  # extra column is tolerated
