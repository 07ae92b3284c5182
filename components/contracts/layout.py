"""Data layout: the time split into subsets, and the names of the data-plane artifacts.

Never random: a model is always trained on the past and judged on the future. All
boundaries are store-local midnights, so a day is never cut in two:

    first day ... | train_end | valid_end | historic_end | live_end
       train      |   valid   |   test    |     live     |

Rows with ``timestamp < train_end`` are train, ``< valid_end`` valid, ``< historic_end``
test (the three ``HISTORIC_SUBSETS`` of the historic lake), and ``historic_end <= timestamp
< live_end`` the live stream that the traffic simulator replays (labels kept aside).
``split`` computes the boundaries and writes them (``TimeBoundaries.to_json``); ``features``
reads them back to label each row of the feature table with its subset.

Cashier-disjoint evaluation: ``split`` also holds out a share of cashiers
(``holdout_cashiers``, stratified by whether a cashier ever committed fraud, chosen by a
seeded hash of ``cashier_id``). Their train- and valid-period rows get the subset
``HOLDOUT`` (nothing is fitted or chosen on them); their test-period rows stay ``test`` and
form, with cashiers hired after ``valid_end``, the "unseen cashiers" cohort. Their rows
still flow through the point-in-time profiles (a served cashier has a history too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.contracts.schemas import TIMESTAMP, InputError

SUBSETS = ("train", "valid", "test", "live")
"""Time subsets in time order; ``subset_codes`` indexes into this tuple."""
HISTORIC_SUBSETS = SUBSETS[:3]
"""The subsets of the historic lake (and of the feature table's ``SUBSET_COLUMN``)."""
HOLDOUT = "holdout"
"""Feature-table subset of held-out cashiers' rows before ``valid_end`` (never fitted on)."""
FEATURE_SUBSETS = (*HISTORIC_SUBSETS, HOLDOUT)
"""Every value the feature table's ``SUBSET_COLUMN`` may hold."""
SUBSET_COLUMN = "subset"
"""Feature-table column holding each row's subset."""
DATE_COLUMN = "date"
"""Hive partition key of the historic lake (``date=YYYY-MM-DD``)."""


class Artifacts:
    """Names of the data-plane artifacts: KFP input/output names (CLI flags are
    ``--in-<name>`` / ``--out-<name>`` with ``-`` for ``_``)."""

    TRANSACTIONS = "transactions"
    HISTORIC = "historic"
    LIVE_STREAM = "live_stream"
    LIVE_LABELS = "live_labels"
    TIME_SPLITS = "time_splits"
    FEATURES = "features"
    PROFILES = "profiles"


DATA_STAGES = {
    "datagen": ((), (Artifacts.TRANSACTIONS,)),
    "split": (
        (Artifacts.TRANSACTIONS,),
        (Artifacts.HISTORIC, Artifacts.LIVE_STREAM, Artifacts.LIVE_LABELS, Artifacts.TIME_SPLITS),
    ),
    "features": (
        (Artifacts.HISTORIC, Artifacts.TIME_SPLITS),
        (Artifacts.FEATURES, Artifacts.PROFILES),
    ),
}
"""(input artifacts, output artifacts) of each data-plane stage; the emitted component
specs must match (``tests/unit/test_layout.py``)."""


@dataclass(frozen=True)
class TimeBoundaries:
    """Split boundaries (store-local midnights, no time zone), in increasing order.

    ``live_end`` is None when only the historic boundaries are known (a hand-written
    splits file given to ``features``, which never needs it).
    """

    train_end: datetime
    valid_end: datetime
    historic_end: datetime
    live_end: datetime | None = None
    holdout_cashiers: frozenset[str] = frozenset()
    """Cashiers whose train/valid-period rows no model sees (``holdout_cashiers``)."""

    def to_json(self) -> dict[str, Any]:
        """ISO-8601 strings (and the sorted held-out cashier ids), the ``time_splits`` file."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name).isoformat()
            for f in fields(self)
            if f.name != "holdout_cashiers" and getattr(self, f.name) is not None
        }
        out["holdout_cashiers"] = sorted(self.holdout_cashiers)
        return out

    def with_holdout(self, cashiers: Any) -> TimeBoundaries:
        """Copy holding out ``cashiers`` (ids)."""
        from dataclasses import replace

        return replace(self, holdout_cashiers=frozenset(str(c) for c in cashiers))

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "time splits") -> TimeBoundaries:
        """Parse ``to_json``'s output; ``live_end`` is optional.

        Raises:
            InputError: Naming ``source`` and the missing, malformed or misordered key.
        """
        if not isinstance(obj, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(obj).__name__}")
        values: dict[str, Any] = {}
        holdout = obj.get("holdout_cashiers", [])
        if not isinstance(holdout, list) or not all(isinstance(c, str) for c in holdout):
            raise InputError(f"{source}: key 'holdout_cashiers' must be a list of cashier ids")
        values["holdout_cashiers"] = frozenset(holdout)
        for f in fields(cls):
            if f.name == "holdout_cashiers":
                continue
            if f.name not in obj:
                if f.name == "live_end":
                    continue
                raise InputError(f"{source}: missing key '{f.name}'")
            try:
                values[f.name] = datetime.fromisoformat(str(obj[f.name]))
            except ValueError as exc:
                raise InputError(
                    f"{source}: key '{f.name}' is not an ISO timestamp ({exc})"
                ) from exc
        b = cls(**values)
        edges = [e for e in (b.train_end, b.valid_end, b.historic_end, b.live_end) if e]
        if edges != sorted(edges):
            raise InputError(
                f"{source}: keys out of order (need train_end <= valid_end <= historic_end"
                f" <= live_end): {obj}"
            )
        return b


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
        InputError: A day count is below 1, or the period is too short for the requested days.
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


def _as_datetime64(timestamps: Any) -> np.ndarray:
    """Timestamps (Arrow array, pandas Series or numpy) as datetime64[us].

    Truncating finer units to microseconds keeps every comparison with a boundary exact,
    because the boundaries are whole microseconds.
    """
    if isinstance(timestamps, pa.Array | pa.ChunkedArray):
        return np.asarray(pc.cast(timestamps, TIMESTAMP).to_numpy(zero_copy_only=False))
    return np.asarray(pd.to_datetime(np.asarray(timestamps))).astype("datetime64[us]")


def subset_codes(timestamps: Any, b: TimeBoundaries) -> np.ndarray:
    """Index into ``SUBSETS`` of each timestamp (0 train, 1 valid, 2 test, 3 live)."""
    edges = np.array([b.train_end, b.valid_end, b.historic_end], dtype="datetime64[us]")
    return np.searchsorted(edges, _as_datetime64(timestamps), side="right")


def assign_subset(
    timestamps: Any,
    b: TimeBoundaries,
    *,
    historic_only: bool = False,
    cashier_ids: Any = None,
) -> np.ndarray:
    """Subset name (``SUBSETS``, or ``HOLDOUT``) of each row.

    Args:
        timestamps: Arrow array, pandas Series or numpy array of timestamps.
        b: The split boundaries.
        historic_only: The rows come from the historic lake: a live-period row is an error.
        cashier_ids: Each row's cashier; given, rows of ``b.holdout_cashiers`` before
            ``valid_end`` are ``HOLDOUT`` instead of train / valid.

    Raises:
        InputError: ``historic_only`` and a row is at or after ``b.historic_end``.
    """
    codes = subset_codes(timestamps, b)
    if historic_only:
        live = codes == SUBSETS.index("live")
        if live.any():
            latest = pd.Timestamp(_as_datetime64(timestamps).max())
            raise InputError(
                f"column 'timestamp' has {int(live.sum())} row(s) at or after historic_end "
                f"{b.historic_end} (latest {latest}): live-period rows must not be in the "
                "historic lake"
            )
    names = np.asarray(SUBSETS, dtype=object)[codes]
    if cashier_ids is not None and b.holdout_cashiers:
        held = np.isin(np.asarray(cashier_ids, dtype=object).astype(str), list(b.holdout_cashiers))
        names[held & (codes <= SUBSETS.index("valid"))] = HOLDOUT
    return names


def _rank_key(cashier_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{cashier_id}".encode()).digest()


def holdout_cashiers(
    cashier_ids: Any, dishonest: Any, *, fraction: float, seed: int
) -> frozenset[str]:
    """The cashiers held out of training and validation (cashier-disjoint evaluation).

    Stratified: within the dishonest cashiers (any fraud row) and within the others, the
    ``round(fraction * n)`` cashiers with the smallest ``sha256(f"{seed}:{cashier_id}")``.
    The choice depends only on the ids, the strata and the seed (not on row order).

    Args:
        cashier_ids: One entry per cashier (duplicates are collapsed; any row order).
        dishonest: Aligned with ``cashier_ids``: True where that cashier committed fraud
            (a cashier is dishonest if any of its entries is).
        fraction: Share of each stratum held out, in [0, 1).
        seed: Seed of the hash order.

    Raises:
        InputError: ``fraction`` outside [0, 1).
    """
    if not 0 <= fraction < 1:
        raise InputError(f"--holdout-cashier-fraction must be in [0, 1), got {fraction}")
    ids = np.asarray(cashier_ids, dtype=object).astype(str)
    flags = np.asarray(dishonest, dtype=bool)
    frame = pd.DataFrame({"id": ids, "bad": flags}).groupby("id", sort=True)["bad"].any()
    chosen: list[str] = []
    for bad in (True, False):
        stratum = sorted(frame.index[frame.to_numpy() == bad], key=lambda c: _rank_key(c, seed))
        chosen += stratum[: round(fraction * len(stratum))]
    return frozenset(chosen)
