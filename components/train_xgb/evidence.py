"""An extrapolation prior for blatant abuse: more of the same evidence is never less suspicious.

A booster learns only the region the data covers. In the generated world an abusive
cashier voids one or two lines and opens the drawer one to three times, and honest cashiers
do the same (the honest look-alikes): no training row shows more. So the data cannot say
what 8 voids on a 3-item basket mean, and trees extrapolate flat from the last region seen,
which is mostly honest: blatant abuse scored Low.

The prior states loss-prevention's rule as data: for each train row of a type whose
evidence is a count the seed contract carries (``EVIDENCE``), copies with that count set
BEYOND the largest value any legitimate train row shows (uniform on ``(legit max,
max_factor x legit max]``), the row's z-score of it moved with it, label unchanged. No
legitimate row is in that region, so no in-distribution row changes meaning; test rows
(drawn from the same world) are never there either, so the prior moves no test metric: it
only decides what the model says outside the world it saw. The copies are train rows of
their type: a leave-one-type-out fold drops them with it. Valid is never augmented.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from components.contracts.features import Z_CLIP
from components.contracts.training import Subset

EVIDENCE = {"void_abuse": "void_count", "no_sale_abuse": "no_sale_count"}
"""Fraud type -> the count among the seed brief's seven fields that is its evidence."""


def beyond_legitimate(
    subset: Subset, feature_names: Sequence[str], *, copies: int, max_factor: float, seed: int
) -> Subset:
    """``subset`` plus ``copies`` copies of each ``EVIDENCE``-type row, its count drawn up to
    ``max_factor`` x the largest legitimate one (see the module docstring)."""
    if not copies:
        return subset
    names = list(feature_names)
    rng = np.random.default_rng(seed)
    parts = [subset]
    legit = subset.y == 0
    for fraud_type, count in EVIDENCE.items():
        rows = np.repeat(np.flatnonzero(subset.fraud_type == fraud_type), copies)
        if rows.size == 0 or count not in names:
            continue
        j = names.index(count)
        top = float(np.nanmax(subset.X[legit, j])) if legit.any() else 0.0
        low = int(np.floor(top)) + 1
        high = max(low, int(np.floor(max_factor * max(top, 1.0))))
        copy = subset.take(rows)
        old = copy.X[:, j].copy()
        new = rng.integers(low, high + 1, rows.size).astype(np.float64)
        copy.X[:, j] = new
        z_name = f"z_{count}"
        if z_name in names:  # z = (v - mean) / sd: move it with v, at the row's own sd
            z = names.index(z_name)
            mean = copy.X[:, names.index(f"cashier_mean_{count}")]
            with np.errstate(divide="ignore", invalid="ignore"):
                sd = (old - mean) / copy.X[:, z]
                moved = (new - mean) / sd
            ok = np.isfinite(moved) & (sd > 0)
            copy.X[:, z] = np.clip(np.where(ok, moved, Z_CLIP), -Z_CLIP, Z_CLIP)
        parts.append(copy)
    if len(parts) == 1:
        return subset
    return Subset(
        np.vstack([p.X for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.fraud_type for p in parts]),
    )
