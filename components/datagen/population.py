"""Cashier population and calendar of the generator: stores, lanes, cashiers, shifts, volume.

The world (``make_world``) is fixed for the whole period and comes from
``SeedSequence([seed, 0])``; the daily volume from ``SeedSequence([seed, 2])``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date

import numpy as np

from components.contracts.schemas import PAYMENT_TYPES, InputError
from components.datagen.fraud import (
    CASHIER_PATTERNS,
    DISHONEST_SHARE,
    LATE_TURN_SHARE,
    NONE,
    PATTERN_CODES,
    THIEF_LEAVE_WEIGHT,
    TURNOVER_PER_WEEK,
)

SHIFTS = ((7, 15), (11, 19), (14, 22))
"""Shift hours [start, end) for early / mid / late cashiers."""
OPENING_HOURS = {0: (7, 22), 1: (7, 22), 2: (7, 22), 3: (7, 22), 4: (7, 22), 5: (8, 22), 6: (9, 20)}
"""Opening hours [open, close) per weekday (Monday = 0)."""
WEEKDAY_VOLUME = (0.9, 0.86, 0.9, 0.96, 1.15, 1.35, 1.0)
"""Relative number of transactions per weekday (Monday = 0)."""
NEVER = np.iinfo(np.int64).max // 2
"""Day index meaning "not within any period" (honest cashiers' start day, stayers' leave day)."""
CUSTOMERS_PER_STORE = 3000
"""Card/loyalty holders who shop at a store (the regulars; popularity is skewed)."""
FRIENDS = 3
"""Customers each cashier knows well enough to under-ring (sweethearting)."""
LOYALTY_SHARE = 0.35
"""Share of cash and gift-card customers who scan a loyalty card (a token is logged)."""
STAFF_SHOPPING = 0.004
"""Share of transactions where a member of staff shops with their own card."""


@dataclass(frozen=True, kw_only=True)
class DatagenParams:
    """Size and shape of the generated data (the stage's run knobs)."""

    rows: int = 200_000
    """Total number of transactions."""
    days: int = 28
    """Number of calendar days, starting at ``start_date``."""
    stores: int = 8
    """Number of stores."""
    cashiers_per_store: int = 12
    """Cashiers employed per store."""
    fraud_rate: float = 0.012
    """Overall fraction of fraudulent transactions, in [0, 0.5]."""
    seed: int = 42
    """Random seed: same parameters and seed give identical data."""
    start_date: date = date(2026, 1, 5)
    """First generated day."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad parameter."""
        if self.rows <= 0:
            raise InputError(f"--rows must be positive, got {self.rows}")
        if not 1 <= self.days <= 3660:
            raise InputError(f"--days must be between 1 and 3660, got {self.days}")
        if not 1 <= self.stores <= 999:
            raise InputError(f"--stores must be between 1 and 999, got {self.stores}")
        if not 1 <= self.cashiers_per_store <= 99:
            raise InputError(
                f"--cashiers-per-store must be between 1 and 99, got {self.cashiers_per_store}"
            )
        if not (0.0 <= self.fraud_rate <= 0.5) or math.isnan(self.fraud_rate):
            raise InputError(f"--fraud-rate must be in [0, 0.5], got {self.fraud_rate}")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"--seed must be a non-negative integer, got {self.seed}")
        per_store_day = self.rows / (self.days * self.stores)
        if per_store_day > 999_999:
            raise InputError(
                f"--rows {self.rows} over {self.days} days and {self.stores} stores exceeds "
                "999999 transactions per store and day (transaction ids have 6 digits)"
            )


def parse_date(text: str) -> date:
    """Parse ``YYYY-MM-DD``; raise ``ValueError`` with a clear message otherwise."""
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise InputError(f"--start-date must be a date YYYY-MM-DD, got {text!r}") from None


# ---------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """Stores, lanes, cashiers and customers: fixed for the whole period.

    Staff work in *slots* (``cashiers_per_store`` per store, each with a shift and days
    off); a slot's holder may leave part-way and a new hire takes the slot over
    (``slot_cashier``). Per-cashier arrays are indexed by cashier (established cashiers
    first, then new hires in order of hiring).
    """

    store_ids: list[str]
    store_weight: np.ndarray
    """Share of the chain's traffic per store."""
    sco_share: np.ndarray
    """Fraction of a store's transactions at self-checkout."""
    n_staffed: np.ndarray
    n_sco: np.ndarray
    cashier_ids: list[str]
    cashier_store: np.ndarray
    """Home store of each cashier."""
    slot_cashier: np.ndarray
    """(slots, days): the cashier holding slot ``s * cashiers_per_store + k`` on each day."""
    speed: np.ndarray
    """Seconds per item multiplier (lower is faster), per cashier."""
    shift: np.ndarray
    """Index into ``SHIFTS``, per slot."""
    off_days: np.ndarray
    """(slots, 7) bool: weekly days off."""
    dishonest: np.ndarray
    patterns: np.ndarray
    """(cashiers, 2) fraud codes a dishonest cashier uses (second may repeat the first)."""
    primary_prob: np.ndarray
    """Probability a dishonest cashier's fraud uses the first pattern."""
    intensity: np.ndarray
    """Relative theft frequency of a dishonest cashier."""
    start_day: np.ndarray
    """Day index from which a dishonest cashier steals (``NEVER`` for honest ones)."""
    hire_day: np.ndarray
    """Day index of hiring (-1: employed before the period)."""
    leave_day: np.ndarray
    """First day index no longer employed (``NEVER``: stays)."""
    customer_tokens: list[str]
    """Hashed card tokens: ``CUSTOMERS_PER_STORE`` regulars per store, then one per cashier
    (``own_token``) for the cashier's own card."""
    friends: np.ndarray
    """(cashiers, FRIENDS) customer indices a cashier knows (for sweethearting)."""

    @property
    def cashiers_per_store(self) -> int:
        return self.shift.size // len(self.store_ids)

    def own_token(self, cashier: np.ndarray) -> np.ndarray:
        """Index into ``customer_tokens`` of each cashier's own card."""
        return len(self.store_ids) * CUSTOMERS_PER_STORE + cashier


def _tokens(seed: int, labels: list[str]) -> list[str]:
    """Salted, hashed card tokens (16 hex digits): what a POS may log instead of a card."""
    salt = str(seed).encode()
    return [hashlib.blake2b(t.encode(), digest_size=8, key=salt).hexdigest() for t in labels]


def make_world(params: DatagenParams) -> World:
    """Create the stores, cashiers and customers for ``params`` (deterministic in the seed)."""
    rng = np.random.default_rng([params.seed, 0])
    s, k, days = params.stores, params.cashiers_per_store, params.days
    slots = s * k
    store_weight = rng.lognormal(0.0, 0.35, s)
    store_weight /= store_weight.sum()
    sco_share = rng.uniform(0.25, 0.42, s)
    n_staffed = rng.integers(4, 9, s)
    n_sco = rng.integers(4, 7, s)

    shift = np.empty(slots, dtype=np.int64)
    off_days = np.zeros((slots, 7), dtype=bool)
    for store in range(s):  # per store, not per row: balanced shifts and staggered days off
        order = rng.permutation(k)
        shift[store * k + order] = np.arange(k) % len(SHIFTS)
        first_off = (np.arange(k) * 3 + rng.integers(7)) % 7
        idx = store * k + order
        off_days[idx, first_off] = True
        off_days[idx, (first_off + 1) % 7] = True

    # Turnover: some slots change hands on a day spread evenly over the period (so every
    # week has new hires); thieves are likelier to leave (they quit or are let go).
    dishonest_slot = rng.random(slots) < DISHONEST_SHARE
    n_turn = min(slots, round(TURNOVER_PER_WEEK * slots * days / 7)) if days > 1 else 0
    weight = np.where(dishonest_slot, THIEF_LEAVE_WEIGHT, 1.0)
    turned_slots = rng.choice(slots, size=n_turn, replace=False, p=weight / weight.sum())
    turn_day = 1 + np.floor((np.arange(n_turn) + rng.random(n_turn)) * (days - 1) / max(n_turn, 1))
    turn_day = turn_day.astype(np.int64)
    n = slots + n_turn
    hire_day = np.concatenate([np.full(slots, -1), turn_day])
    leave_day = np.full(n, NEVER, dtype=np.int64)
    leave_day[turned_slots] = turn_day
    slot_cashier = np.repeat(np.arange(slots)[:, None], days, axis=1)
    for j, (slot, day) in enumerate(zip(turned_slots, turn_day, strict=True)):
        slot_cashier[slot, day:] = slots + j
    cashier_store = np.concatenate([np.arange(slots) // k, turned_slots // k])

    dishonest = np.concatenate([dishonest_slot, rng.random(n_turn) < DISHONEST_SHARE])
    if not dishonest.any():
        dishonest[rng.integers(n)] = True
    n_dishonest = int(dishonest.sum())
    dishonest_idx = np.flatnonzero(dishonest)
    # Primary patterns cycle through a permutation so that every pattern has a thief
    # whenever there are at least five of them; the second pattern is random.
    patterns = np.full((n, 2), NONE, dtype=np.int64)
    cycle = rng.permutation(len(CASHIER_PATTERNS))
    primary = PATTERN_CODES[cycle[np.arange(n_dishonest) % len(CASHIER_PATTERNS)]]
    second = PATTERN_CODES[rng.integers(len(CASHIER_PATTERNS), size=n_dishonest)]
    single = rng.random(n_dishonest) < 0.45
    patterns[dishonest_idx, 0] = primary
    patterns[dishonest_idx, 1] = np.where(single, primary, second)
    primary_prob = np.where(dishonest, 0.7, 1.0)
    intensity = np.where(dishonest, rng.lognormal(0.0, 0.4, n), 0.0)
    # Most thieves steal from their first day (of the period, or of the job); late turners
    # start on a day spread over their employment (some after any training cut).
    first = np.maximum(hire_day, 0)
    last = np.minimum(leave_day, days)
    late = rng.random(n) < LATE_TURN_SHARE
    late_day = first + np.floor(rng.random(n) * np.maximum(last - first, 1)).astype(np.int64)
    start_day = np.where(dishonest, np.where(late, late_day, first), NEVER).astype(np.int64)

    labels = [f"{sid}/customer/{i}" for sid in range(s) for i in range(CUSTOMERS_PER_STORE)]
    cashier_ids = [f"C{i + 1:04d}" for i in range(n)]
    customer_tokens = _tokens(params.seed, labels + [f"staff/{c}" for c in cashier_ids])
    friends = cashier_store[:, None] * CUSTOMERS_PER_STORE + rng.integers(
        0, CUSTOMERS_PER_STORE, (n, FRIENDS)
    )
    return World(
        store_ids=[f"S{i + 1:02d}" for i in range(s)]
        if s < 100
        else [f"S{i + 1:03d}" for i in range(s)],
        store_weight=store_weight,
        sco_share=sco_share,
        n_staffed=n_staffed,
        n_sco=n_sco,
        cashier_ids=cashier_ids,
        cashier_store=cashier_store,
        slot_cashier=slot_cashier,
        speed=rng.lognormal(0.0, 0.18, n),
        shift=shift,
        off_days=off_days,
        dishonest=dishonest,
        patterns=patterns,
        primary_prob=primary_prob,
        intensity=intensity,
        start_day=start_day,
        hire_day=hire_day,
        leave_day=leave_day,
        customer_tokens=customer_tokens,
        friends=friends,
    )


def customer_tokens(
    rng: np.random.Generator,
    world: World,
    store: np.ndarray,
    colleague: np.ndarray,
    payment: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Who paid: (index into ``world.customer_tokens``, whether the POS logged a token).

    Regulars of the store with skewed popularity; a card or mobile payment always leaves a
    token, cash and gift cards only with a loyalty card (``LOYALTY_SHARE``). Staff shop
    too (``STAFF_SHOPPING``): their own card appears at a colleague's lane, the honest
    look-alike of a refund to the cashier's own card.
    """
    regular = store * CUSTOMERS_PER_STORE + np.floor(
        CUSTOMERS_PER_STORE * rng.random(n) ** 2
    ).astype(np.int64)
    staff = rng.random(n) < STAFF_SHOPPING
    customer = np.where(staff, world.own_token(colleague), regular)
    card = (payment == PAYMENT_TYPES.index("card")) | (payment == PAYMENT_TYPES.index("mobile"))
    return customer, card | (rng.random(n) < LOYALTY_SHARE)


def allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def day_row_counts(params: DatagenParams) -> np.ndarray:
    """Transactions per day: weekly pattern times a little day-to-day noise, summing to rows."""
    rng = np.random.default_rng([params.seed, 2])
    weekday0 = params.start_date.weekday()
    weekdays = (weekday0 + np.arange(params.days)) % 7
    weights = np.asarray(WEEKDAY_VOLUME)[weekdays] * rng.lognormal(0.0, 0.06, params.days)
    return allocate(params.rows, weights)


def intraday_density(weekday: int) -> np.ndarray:
    """Probability of a transaction in each minute of the day (zero outside opening hours)."""
    minutes = np.arange(1440) / 60.0
    open_h, close_h = OPENING_HOURS[weekday]
    base = 0.45 + 1.0 * np.exp(-0.5 * ((minutes - 12.6) / 0.9) ** 2)
    base += 1.3 * np.exp(-0.5 * ((minutes - 17.8) / 1.25) ** 2)
    if weekday >= 5:
        base += 0.8 * np.exp(-0.5 * ((minutes - 14.0) / 2.5) ** 2)
    density = np.where((minutes >= open_h) & (minutes < close_h), base, 0.0)
    return density / density.sum()
