"""Customer-token history: how often a customer's card comes back to one cashier, and refunds.

ONE definition for the batch features stage (``ProfileState.advance`` folds a chunk with
``fold_tokens``), the in-process store (``fold_token``, the same numba code, one row) and the
Redis store (``serving.store.redis_store.FOLD`` repeats ``_step`` and ``_fold`` in Lua, the
only second language; ``tests/integration/test_store_parity.py`` proves they agree). The
model to copy was ``windows``; the rules are the same kind.

Why: the world's sweethearting under-rings the same few friends (their token recurs with
that cashier, and mostly with that cashier), and refund fraud pays out to the cashier's own
card or a friend's. A regular customer visits many cashiers; a friend comes back to one.

Rules:

* **State.** Per (cashier, token) pair and per token: the time of the last visit and the
  visits and refunds (a row with ``refund_amount > 0``, the windows' ``refund`` count)
  decayed exponentially with a 30-day time constant (``DECAY_S``): a visit ``dt`` seconds
  ago weighs ``exp(-dt / DECAY_S)``.
* **Features** (``TOKEN_FEATURES``), the history *before* this transaction moved to its time:
  ``token_cashier_visits`` and ``token_visits`` (decayed visits to this cashier / in total),
  ``token_cashier_share`` = cashier visits / (total visits + 1) (one pseudo-visit: a token
  seen once reads 0.5, not 1), ``token_cashier_refunds`` and ``token_refunds``.
* **Missing.** A transaction without a token (not sent, or null: anonymous cash) has all
  five features missing (NaN) and adds nothing to any state.
* **Order.** As for windows: a transaction older than a state's last time is treated at that
  time (``max(t, last)``), in batch (time order) and online (arrival order) alike.
* **Keys.** ``pair_key(cashier, token)`` names a pair everywhere (profile table, stores).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numba
import numpy as np
import pandas as pd

from components.contracts.feature_columns import (
    FOLD_COUNTS,
    FOLD_EPOCH,
    FOLD_WIDTH,
    PAIR_BLOCK,
    TOKEN_BLOCK,
    TOKEN_WIDTH,
    WINDOW_COUNTS,
    Feat,
    Raw,
    Tok,
    WinCount,
)
from components.contracts.windows import window_counts

DECAY_S = 30 * 86400.0
"""Time constant of the token visits and refunds (a friend who comes monthly still recurs)."""
TTL_S = int(12 * DECAY_S)
"""Online stores may forget a state untouched this long (its weight is below exp(-12))."""

_REFUND = FOLD_COUNTS + int(WinCount.refund)


def pair_key(cashier_id: str, token: str) -> str:
    """The one name of a (cashier, token) pair: the cashier's UTF-8 length first, so no
    pair of ids can collide whatever characters they hold."""
    return f"{len(cashier_id.encode())}:{cashier_id}|{token}"


@numba.njit(cache=True, nogil=True)
def _step(s: np.ndarray, t: float) -> tuple[float, float]:
    """(effective time, decay factor) of a visit at ``t`` on state ``s``."""
    last = s[Tok.last_epoch_s]
    te = max(t, last)
    return te, math.exp(-(te - last) / DECAY_S)


@numba.njit(cache=True, nogil=True)
def _fold(s: np.ndarray, t: float, refund: float, out: np.ndarray) -> None:
    te, d = _step(s, t)
    out[Tok.last_epoch_s] = te
    out[Tok.visits] = s[Tok.visits] * d + 1.0
    out[Tok.refunds] = s[Tok.refunds] * d + refund


@numba.njit(cache=True, nogil=True)
def fold_token(s: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A pair's or token's new state after the transaction whose fold vector is ``values``
    (FOLD_WIDTH: its epoch_s and window ``refund`` count). The stores' one-row fold."""
    if values.shape[0] != FOLD_WIDTH or s.shape[0] != TOKEN_WIDTH:
        raise ValueError("fold_token: a FOLD_WIDTH fold vector and a TOKEN_WIDTH state")
    out = np.empty(TOKEN_WIDTH)
    _fold(s, values[FOLD_EPOCH], values[_REFUND], out)
    return out


@numba.njit(cache=True, nogil=True)
def fold_tokens(
    raw: np.ndarray,
    pair_codes: np.ndarray,
    token_codes: np.ndarray,
    pairs: np.ndarray,
    tokens: np.ndarray,
    prior: np.ndarray,
) -> None:
    """Batch fold over time-ordered rows: ``prior[i]`` = row i's pair state then token state
    before row i (zeros when row i has no token: code -1); ``pairs`` / ``tokens`` end as the
    final states."""
    x = np.empty(len(WINDOW_COUNTS))
    out = np.empty(TOKEN_WIDTH)
    for i in range(raw.shape[0]):
        if token_codes[i] < 0:
            prior[i, :] = 0.0
            continue
        window_counts(raw[i], x)  # the same refund count the online fold vector carries
        t = raw[i, Raw.epoch_s]
        pair = pairs[pair_codes[i]]
        prior[i, :TOKEN_WIDTH] = pair
        _fold(pair, t, x[WinCount.refund], out)
        pair[:] = out
        token = tokens[token_codes[i]]
        prior[i, TOKEN_WIDTH:] = token
        _fold(token, t, x[WinCount.refund], out)
        token[:] = out


@numba.njit(cache=True, nogil=True)
def token_features(r: np.ndarray, p: np.ndarray, f: np.ndarray) -> None:
    """Fill the ``TOKEN_FEATURES`` of row ``r`` from its prior ``p`` (pair and token states
    before the row, moved to the row's time by the same ``_step`` the fold uses)."""
    if math.isnan(r[Raw.has_customer_token]):
        f[Feat.token_cashier_visits] = math.nan
        f[Feat.token_visits] = math.nan
        f[Feat.token_cashier_share] = math.nan
        f[Feat.token_cashier_refunds] = math.nan
        f[Feat.token_refunds] = math.nan
        return
    t = r[Raw.epoch_s]
    pair = p[PAIR_BLOCK : PAIR_BLOCK + TOKEN_WIDTH]
    token = p[TOKEN_BLOCK : TOKEN_BLOCK + TOKEN_WIDTH]
    dp = _step(pair, t)[1]
    dt = _step(token, t)[1]
    visits = token[Tok.visits] * dt
    f[Feat.token_cashier_visits] = pair[Tok.visits] * dp
    f[Feat.token_visits] = visits
    f[Feat.token_cashier_share] = pair[Tok.visits] * dp / (visits + 1.0)
    f[Feat.token_cashier_refunds] = pair[Tok.refunds] * dp
    f[Feat.token_refunds] = token[Tok.refunds] * dt


_NO_TOKEN = np.zeros(TOKEN_WIDTH)
"""A pair or token never seen (or a transaction without a token)."""


def _missing(token: object) -> bool:
    return token is None or (not isinstance(token, str) and bool(pd.isna(token)))


class TokenHistory:
    """The pair and token states by key: the batch side's running state (``advance``), the
    bundle's frozen copy (``rows`` / ``from_rows``) and its lookup (``prior``)."""

    def __init__(self) -> None:
        self.pairs: dict[str, np.ndarray] = {}
        self.tokens: dict[str, np.ndarray] = {}

    def advance(
        self, raw: np.ndarray, cashier_ids: Sequence[str], tokens: Sequence[str | None] | None
    ) -> np.ndarray:
        """(n, 2 * TOKEN_WIDTH) pair and token states before each time-ordered row, then the
        rows folded in. ``tokens`` None: no row has a token (nothing is folded)."""
        n = raw.shape[0]
        if tokens is None:
            return np.zeros((n, 2 * TOKEN_WIDTH))
        tokens = [None if _missing(t) else str(t) for t in tokens]
        pair_keys = [
            None if t is None else pair_key(str(c), t)
            for c, t in zip(cashier_ids, tokens, strict=True)
        ]
        pair_codes, pair_uniques = pd.factorize(pd.Series(pair_keys, dtype=object), sort=False)
        token_codes, token_uniques = pd.factorize(pd.Series(tokens, dtype=object), sort=False)
        pairs = np.stack([self.pairs.get(k, _NO_TOKEN) for k in pair_uniques] or [_NO_TOKEN])
        toks = np.stack([self.tokens.get(k, _NO_TOKEN) for k in token_uniques] or [_NO_TOKEN])
        prior = np.empty((n, 2 * TOKEN_WIDTH))
        fold_tokens(
            np.ascontiguousarray(raw, dtype=np.float64), pair_codes, token_codes, pairs, toks, prior
        )
        self.pairs.update(zip(pair_uniques, pairs, strict=False))
        self.tokens.update(zip(token_uniques, toks, strict=False))
        return prior

    def rows(self) -> Iterator[tuple[str, str, np.ndarray]]:
        """(level, key, state) for the profile table: pairs, then tokens, sorted by key."""
        for level, table in (("pair", self.pairs), ("token", self.tokens)):
            for key in sorted(table):
                yield level, key, table[key]

    @classmethod
    def from_rows(cls, levels: np.ndarray, keys: np.ndarray, states: np.ndarray) -> TokenHistory:
        """The history a profile table holds (its ``pair`` and ``token`` rows)."""
        history = cls()
        for level, table in (("pair", history.pairs), ("token", history.tokens)):
            for i in np.flatnonzero(levels == level):
                table[keys[i]] = states[i]
        return history

    def prior(self, cashier_id: str, token: str | None) -> np.ndarray:
        """(2 * TOKEN_WIDTH,) the pair's and the token's state (zeros: never seen / no token)."""
        if token is None:
            return np.zeros(2 * TOKEN_WIDTH)
        return np.concatenate(
            (
                self.pairs.get(pair_key(cashier_id, token), _NO_TOKEN),
                self.tokens.get(token, _NO_TOKEN),
            )
        )
