"""Missing inputs: what a client that does not send an optional field looks like to the models.

``features.MISSING_INPUT_FEATURES`` says which features are NaN when a field is missing;
these helpers apply it to feature matrices, so no other code decides it again:

* ``mask_fields`` - the seed-contract view in ``evaluate`` (``components.evaluate.views``)
  and tests: the same rows as if the fields had not been sent;
* ``missing_inputs`` - training (``train-xgb``): copies of a seeded share of the train rows
  with whole fields missing, so the booster learns what absence means (XGBoost learns a
  default branch for NaN at every split).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from components.contracts.features import MASKABLE_FIELDS, MISSING_INPUT_FEATURES
from components.contracts.training import Subset


def missing_columns(feature_names: Sequence[str], fields: Sequence[str]) -> list[int]:
    """Positions (in ``feature_names``) of the features that are NaN when ``fields`` are
    missing (``MISSING_INPUT_FEATURES``)."""
    names = list(feature_names)
    return [
        names.index(name)
        for field in fields
        for name in MISSING_INPUT_FEATURES[field]
        if name in names
    ]


def mask_fields(
    X: np.ndarray,
    feature_names: Sequence[str],
    fields: Sequence[str],
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``X`` in which ``rows`` (bool mask or indices; all if None) miss
    ``fields``: exactly what ``features.raw_row`` makes of a request not sending them."""
    out = np.array(X, dtype=np.float64)
    cols = missing_columns(feature_names, fields)
    if rows is None:
        out[:, cols] = np.nan
    else:
        idx = np.asarray(rows)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx
        out[np.ix_(idx, cols)] = np.nan
    return out


def missing_inputs(
    subset: Subset,
    feature_names: Sequence[str],
    *,
    share: float,
    seed_contract_share: float,
    seed: int,
) -> Subset:
    """``subset`` plus copies of a seeded ``share`` of its rows with optional inputs missing
    (whole fields per row, via ``MISSING_INPUT_FEATURES``): the booster sees, for the same
    transactions, what a client that does not send those fields looks like.

    Copies of the seed contract (only the seven required fields) are ``seed_contract_share``
    of them; the others miss a random subset of the optional fields (each with probability
    1/2). Training data only: valid and test are never augmented."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(rng.random(subset.n) < share)
    if rows.size == 0:
        return subset
    names = list(feature_names)
    copy = subset.take(rows)
    seven = rng.random(rows.size) < seed_contract_share
    missing = rng.random((rows.size, len(MASKABLE_FIELDS))) < 0.5
    missing[seven] = True
    X = copy.X  # ``take`` copied the rows: masked in place
    for j, field in enumerate(MASKABLE_FIELDS):
        X[np.ix_(np.flatnonzero(missing[:, j]), missing_columns(names, (field,)))] = np.nan
    return Subset(
        np.vstack([subset.X, X]),
        np.concatenate([subset.y, copy.y]),
        np.concatenate([subset.fraud_type, copy.fraud_type]),
    )
