"""Cashier cohorts from the cohort label columns (``schemas.COHORT_LABELS``) and a time cut.

The one derivation behind evaluate's cohort table (cut: the first day of the test period,
after which nothing is fitted or chosen) and the traffic simulator's (cut: the first day of
the live stream, after which the frozen profiles know nothing):

* ``established``: hired before the cut, or before the data (``cashier_hired_on`` null);
* ``new_hires``: hired on or after the cut: no history before it;
* ``late_turners``: started stealing (``cashier_turned_on``) on or after the cut and before
  the end of the scored period: honest in everything before the cut;
* ``thieves``: started stealing before the end of the scored period.

Masks are per row (a row belongs to its cashier's cohorts); ``established`` and
``new_hires`` split the rows, the other two overlap them. Label-side only: never a model
input or a request field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DATE_COHORTS = ("established", "new_hires", "late_turners", "thieves")
"""The cohorts ``date_cohorts`` returns, in report order."""


def as_days(values: Any) -> np.ndarray:
    """Dates (Arrow ``to_numpy``, ``datetime.date`` objects, strings, None) as
    ``datetime64[D]``; null is NaT (every comparison with NaT is False)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[D]")
    return np.asarray(pd.to_datetime(arr.astype(object)), dtype="datetime64[D]")


def has_dates(*columns: Any) -> bool:
    """True when any of the cohort columns holds a date (older data: all null)."""
    return any(bool((~np.isnat(as_days(c))).any()) for c in columns)


def date_cohorts(
    hired_on: Any, turned_on: Any, *, cut: Any, end: Any = None
) -> dict[str, np.ndarray]:
    """Row masks per ``DATE_COHORTS`` entry.

    Args:
        hired_on: Each row's ``cashier_hired_on`` (null: employed before the data).
        turned_on: Each row's ``cashier_turned_on`` (null: honest).
        cut: First day after the history the models (or profiles) were built from.
        end: First day after the scored period (None: no end): a cashier turning on or
            after it is honest in every scored row.
    """
    hired, turned = as_days(hired_on), as_days(turned_on)
    cut_day = np.datetime64(pd.Timestamp(cut).date(), "D")
    before_end = (
        ~np.isnat(turned) if end is None else turned < np.datetime64(pd.Timestamp(end).date(), "D")
    )
    new_hires = hired >= cut_day
    return {
        "established": ~new_hires,
        "new_hires": new_hires,
        "late_turners": (turned >= cut_day) & before_end,
        "thieves": before_end,
    }
