"""Time-based split: historic lake (train / valid / test by time) and a held-out live stream.

Never random: a model is always trained on the past and judged on the future. All
boundaries are midnights, so a day is never cut in two:

    first day ... | train_end | valid_end | historic_end | live_end
       train      |   valid   |   test    |     live     |

Rows with ``timestamp < train_end`` are train, ``< valid_end`` valid, ``< historic_end``
test (all three in the historic lake), and ``historic_end <= timestamp < live_end`` the live
stream that the traffic simulator replays (labels kept aside).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.contracts.schemas import LABELS, LIVE_LABELS, RAW_TRANSACTION, TIMESTAMP, InputError

SUBSETS = ("train", "valid", "test", "live")
DATE_COLUMN = "date"
"""Hive partition key of the historic lake (``date=YYYY-MM-DD``)."""


@dataclass(frozen=True)
class TimeBoundaries:
    """Split boundaries (store-local midnights, no time zone), in increasing order."""

    train_end: datetime
    valid_end: datetime
    historic_end: datetime
    live_end: datetime

    def to_json(self) -> dict[str, str]:
        """ISO-8601 strings, the ``--out-time-splits`` file's content."""
        return {
            "train_end": self.train_end.isoformat(),
            "valid_end": self.valid_end.isoformat(),
            "historic_end": self.historic_end.isoformat(),
            "live_end": self.live_end.isoformat(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TimeBoundaries:
        return cls(**{k: datetime.fromisoformat(obj[k]) for k in cls.__dataclass_fields__})


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min)


def time_boundaries(
    min_ts: datetime, max_ts: datetime, *, live_days: int, valid_days: int, test_days: int
) -> TimeBoundaries:
    """Boundaries for data spanning ``min_ts`` .. ``max_ts``.

    The live window is the last ``live_days`` calendar days (up to the midnight after
    ``max_ts``); test is the ``test_days`` before it, valid the ``valid_days`` before that,
    and everything earlier is train, which must keep at least one day.

    Raises:
        ValueError: A day count is negative (live/test/valid must be >= 1), or the period
            is too short for the requested days.
    """
    for name, value in (("--live-days", live_days), ("--valid-days", valid_days),
                        ("--test-days", test_days)):  # fmt: skip
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if max_ts < min_ts:
        raise InputError(f"time range is reversed: {min_ts} > {max_ts}")
    first, last = min_ts.date(), max_ts.date()
    span = (last - first).days + 1
    needed = live_days + test_days + valid_days + 1
    if span < needed:
        raise InputError(
            f"the data covers {span} day(s) ({first} .. {last}), too short for "
            f"--live-days {live_days} + --test-days {test_days} + --valid-days {valid_days} "
            f"+ at least 1 training day ({needed} days)"
        )
    live_end = _midnight(last + timedelta(days=1))
    historic_end = live_end - timedelta(days=live_days)
    valid_end = historic_end - timedelta(days=test_days)
    train_end = valid_end - timedelta(days=valid_days)
    return TimeBoundaries(train_end, valid_end, historic_end, live_end)


def _scalar(ts: datetime) -> pa.Scalar:
    return pa.scalar(ts, type=TIMESTAMP)


def subset_codes(timestamps: pa.Array | pa.ChunkedArray, b: TimeBoundaries) -> np.ndarray:
    """Index into ``SUBSETS`` of each timestamp (0 train, 1 valid, 2 test, 3 live)."""
    ts = np.asarray(pc.cast(timestamps, TIMESTAMP).to_numpy(zero_copy_only=False))
    edges = np.array([b.train_end, b.valid_end, b.historic_end], dtype="datetime64[us]")
    return np.searchsorted(edges, ts, side="right")


def assign_subset(timestamps: pa.Array | pa.ChunkedArray, b: TimeBoundaries) -> np.ndarray:
    """Subset name (``SUBSETS``) of each timestamp."""
    return np.asarray(SUBSETS, dtype=object)[subset_codes(timestamps, b)]


def split_by_time(table: pa.Table, b: TimeBoundaries) -> tuple[pa.Table, pa.Table]:
    """Split labelled transactions into (historic, live) at ``b.historic_end``.

    Rows at or after ``b.live_end`` cannot occur when ``b`` came from the same data; they
    are rejected rather than silently dropped.
    """
    ts = table.column("timestamp")
    late = pc.sum(pc.greater_equal(ts, _scalar(b.live_end))).as_py() or 0
    if late:
        raise InputError(f"{late} transaction(s) at or after live_end {b.live_end}")
    is_live = pc.greater_equal(ts, _scalar(b.historic_end))
    return table.filter(pc.invert(is_live)), table.filter(is_live)


def with_date_partition(table: pa.Table) -> pa.Table:
    """Append the ``date`` (YYYY-MM-DD) Hive partition column."""
    # date32 -> string is ISO (YYYY-MM-DD) and several times faster than strftime.
    dates = pc.cast(pc.cast(table.column("timestamp"), pa.date32()), pa.string())
    return table.append_column(DATE_COLUMN, dates)


def time_order(table: pa.Table) -> pa.Table:
    """Sort by timestamp, then transaction_id (a total, deterministic order)."""
    return table.sort_by([("timestamp", "ascending"), ("transaction_id", "ascending")])


def live_stream(live: pa.Table) -> pa.Table:
    """What POS terminals send: RAW_TRANSACTION columns only (no labels), in time order."""
    return time_order(live).select(RAW_TRANSACTION.names).cast(RAW_TRANSACTION)


def live_labels(live: pa.Table) -> pa.Table:
    """The live stream's labels (LIVE_LABELS), in the stream's order."""
    ordered = time_order(live)
    return ordered.select(["transaction_id", *LABELS.names]).cast(LIVE_LABELS)
