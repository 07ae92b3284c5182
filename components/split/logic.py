"""Time-based split of labelled transactions into the historic lake and the live stream.

The boundaries and subsets are defined in ``components.contracts.layout``; this module cuts
tables at them.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from components.contracts.layout import DATE_COLUMN, TimeBoundaries
from components.contracts.schemas import LIVE_LABELS, RAW_TRANSACTION, TIMESTAMP, InputError


def _scalar(ts: datetime) -> pa.Scalar:
    return pa.scalar(ts, type=TIMESTAMP)


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
    """The live stream's labels (LIVE_LABELS: cohort labels included), in the stream's order."""
    return time_order(live).select(LIVE_LABELS.names).cast(LIVE_LABELS)
