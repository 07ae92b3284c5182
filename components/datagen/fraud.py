"""Fraud patterns of the generator: how much fraud, who commits it, and in which pattern.

Fraud (``schemas.FRAUD_TYPES``) is committed by a minority of dishonest cashiers
(``DISHONEST_SHARE`` of staff; each favours one or two patterns, steals only in some shifts
and a few times per shift, some start part-way through their employment), by otherwise
honest cashiers (opportunistic), and at SCO by customers (``scan_avoidance``). The honest
look-alike rates and the staff-turnover knobs live here too: every knob of the world's
behaviour in one place (``components/datagen/README.md`` says what each models). ``fraud_probabilities`` spreads a day's expected number of
frauds over its transactions; ``generate_day`` (``logic``) draws the labels and gives each
pattern its signature in the basket.
"""

from __future__ import annotations

import numpy as np

from components.contracts.schemas import FRAUD_TYPES

DISHONEST_SHARE = 0.15
"""Fraction of cashiers (established and new hires) who steal repeatedly."""
DISHONEST_FRAUD_SHARE = 0.75
"""Share of cashier fraud (all but scan avoidance) aimed at dishonest cashiers; their
theft is capped per shift (``THEFT_SHIFT_SHARE``, ``THEFT_CAP``), so the part they cannot
carry falls to honest cashiers' opportunistic fraud."""
THEFT_SHIFT_SHARE = 0.4
"""Share of a dishonest cashier's shifts on which they steal at all (theft is clustered:
a thief waits for a quiet evening, a friend's visit, a cash-heavy day)."""
THEFT_CAP = 0.08
"""Highest fraud probability of one transaction in a theft shift (~3-4 events in a
60-basket shift): exception reports look for a few events a week, not every fifth basket."""
SCAN_AVOIDANCE_SHARE = 0.35
"""Share of all fraud that is customer scan avoidance at self-checkout (customer theft at
SCO is the largest single source of unknown shrink)."""
TURNOVER_PER_WEEK = 0.05
"""Share of staff slots that change hands per week: the holder leaves and a new hire takes
the slot over the same day. Changes are spread evenly over the period (new hires every week)."""
THIEF_LEAVE_WEIGHT = 3.0
"""How much likelier a dishonest cashier is to leave than an honest one (quits, is let go)."""
LATE_TURN_SHARE = 0.35
"""Share of dishonest cashiers who start stealing part-way through their employment (on a
day spread uniformly over it) rather than from their first day."""
CASHIER_PATTERNS = (
    "sweethearting",
    "void_abuse",
    "no_sale_abuse",
    "refund_fraud",
    "discount_abuse",
)
OPPORTUNISTIC_MIX = (0.3, 0.22, 0.13, 0.15, 0.2)
"""Pattern probabilities (in ``CASHIER_PATTERNS`` order) for fraud by otherwise honest cashiers."""
VOID_REVIEW_LIMIT = 50.0
"""Voids at or above this amount need a supervisor; abusers stay just under it."""
LEGIT_NOSALE_RATE = 0.03
"""Share of honest staffed transactions with a no-sale (change, till check, cash lift)."""
LEGIT_REFUND_RATE = 0.04
"""Share of honest staffed transactions that are (or include) a customer return."""
SCALE_ERROR_RATE = 0.03
"""Share of SCO transactions with a scale error of either sign (produce, bags moved)."""
SUBTLE_SHARE = 0.1
"""Fraction of fraud done carefully enough to look almost legit."""

FRAUD_CODE = {name: i for i, name in enumerate(FRAUD_TYPES)}
"""Index of each fraud type in ``FRAUD_TYPES`` (the generator works on these codes)."""
NONE = FRAUD_CODE["none"]
SWEET = FRAUD_CODE["sweethearting"]
VOID = FRAUD_CODE["void_abuse"]
NOSALE = FRAUD_CODE["no_sale_abuse"]
REFUND = FRAUD_CODE["refund_fraud"]
DISC = FRAUD_CODE["discount_abuse"]
SCAN = FRAUD_CODE["scan_avoidance"]
PATTERN_CODES = np.array([FRAUD_CODE[p] for p in CASHIER_PATTERNS])
"""Codes of ``CASHIER_PATTERNS``, in that order."""


def fill(weights: np.ndarray, target: float, cap: float) -> np.ndarray:
    """Probabilities ``min(cap, a * weights)`` whose sum is ``target`` (or as close as caps allow)."""
    p = np.zeros_like(weights, dtype=np.float64)
    total_w = float(weights.sum())
    if target <= 0 or total_w <= 0:
        return p
    # Every weight capped, summed exactly as the search below sums: cap * count can round
    # above this sum, and a target between the two would make the search double forever.
    full = np.where(weights > 0, cap, 0.0)
    if full.sum() <= target:
        return full
    lo, hi = 0.0, target / total_w
    while np.minimum(cap, hi * weights).sum() < target:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.minimum(cap, mid * weights).sum() < target:
            lo = mid
        else:
            hi = mid
    return np.minimum(cap, hi * weights)


def fraud_probabilities(
    *,
    staffed: np.ndarray,
    dishonest_active: np.ndarray,
    intensity: np.ndarray,
    risky_hour: np.ndarray,
    expected_frauds: float,
) -> np.ndarray:
    """Per-transaction fraud probability whose sum is ``expected_frauds``.

    ``dishonest_active`` marks transactions of a dishonest cashier in a theft shift. Fills,
    in order, those staffed transactions (``DISHONEST_FRAUD_SHARE`` of
    cashier fraud), self-checkout scan avoidance (``SCAN_AVOIDANCE_SHARE`` of all fraud) and
    honest cashiers' staffed transactions (the rest); a pool that hits its cap passes the
    remainder on, so the total is met whenever it is reachable.
    """
    hour_w = np.where(risky_hour, 1.6, 1.0)
    sco = ~staffed
    cashier_target = (
        expected_frauds * (1.0 - SCAN_AVOIDANCE_SHARE) if sco.any() else expected_frauds
    )
    p = np.zeros(staffed.shape, dtype=np.float64)
    dis = staffed & dishonest_active
    p[dis] = fill(intensity[dis] * hour_w[dis], cashier_target * DISHONEST_FRAUD_SHARE, THEFT_CAP)
    remaining = expected_frauds - p.sum()
    sco_target = min(remaining, expected_frauds * SCAN_AVOIDANCE_SHARE)
    p[sco] = fill(np.ones(int(sco.sum())), sco_target, 0.7)
    honest = staffed & ~dishonest_active
    remaining = expected_frauds - p.sum()
    p[honest] = fill(hour_w[honest], remaining, 0.6)
    remaining = expected_frauds - p.sum()
    if remaining > 1e-9:  # very high fraud rates: lift every cap
        p = fill(np.where(p > 0, p, 1e-3), expected_frauds, 1.0)
    return p
