"""Synthetic POS transactions with labelled cashier-fraud patterns: pure, vectorized, seeded.

The generator models a small retail chain:

* **Stores** with different traffic, a few staffed lanes and a bank of self-checkout (SCO)
  lanes; opening hours depend on the weekday.
* **Staff** work in slots (home store, fixed shift early / mid / late, two days off a week);
  faster cashiers handle more baskets. Slots change hands over the period (leavers, new
  hires). Staffed-lane transactions belong to the cashier on the lane; SCO transactions are
  attributed to the attendant on duty.
* **Customers**: regulars per store; card payments and loyalty cards log a hashed
  ``customer_token``; staff shop with their own cards.
* **Time**: the day's volume follows a weekly pattern (busier Fridays and weekends) and an
  intraday curve with lunch and evening peaks.
* **Baskets**: item count (smaller at SCO), price and weight per item with basket-level
  variation, scan duration = payment overhead + items x per-cashier speed, payment types,
  and the honest look-alikes of every fraud pattern: voids (some dear and approved, some
  after payment), no-sale transactions, returns with and without receipt, promotions,
  clearance, staff discounts and manager overrides, SCO scale errors. Only SCO has a scale:
  staffed lanes log ``weight_variance`` 0 and the catalogue weight of what was rung up.

Fraud (``schemas.FRAUD_TYPES``, knobs in ``fraud``) is rare per transaction and clustered in
some shifts of a minority of dishonest cashiers (some turn late, some leave), partly
opportunistic by otherwise honest cashiers, and at SCO by customers (``scan_avoidance``).
No pattern is separable by one raw field (``realism`` measures it).

By role: ``population`` (parameters, stores, staff slots and turnover, customers, shifts,
daily volume), ``fraud`` (the world's knobs, fraud codes and per-transaction fraud
probabilities), ``realism`` (how easy the world is) and this module (one day's baskets,
labels, cohort columns and ids assembled into a table; the stream of days).

Determinism: the world (stores, cashiers, customers) comes from ``SeedSequence([seed, 0])``
and each day from ``SeedSequence([seed, 1, day])``, so the output depends only on the
parameters, never on how the days are chunked for writing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.contracts.schemas import (
    FRAUD_TYPES,
    GENERATED_TRANSACTION,
    LANE_TYPES,
    PAYMENT_TYPES,
    InputError,
)
from components.datagen.fraud import (
    DISC,
    LEGIT_NOSALE_RATE,
    LEGIT_REFUND_RATE,
    NONE,
    NOSALE,
    OPPORTUNISTIC_MIX,
    PATTERN_CODES,
    REFUND,
    SCALE_ERROR_RATE,
    SCAN,
    SUBTLE_SHARE,
    SWEET,
    THEFT_SHIFT_SHARE,
    VOID,
    VOID_REVIEW_LIMIT,
    fraud_probabilities,
)
from components.datagen.population import (  # noqa: F401  (DatagenParams, parse_date: the CLI's)
    FRIENDS,
    NEVER,
    OPENING_HOURS,
    SHIFTS,
    DatagenParams,
    World,
    allocate,
    customer_tokens,
    day_row_counts,
    intraday_density,
    make_world,
    parse_date,
)

# ---------------------------------------------------------------- one day (table assembly)


def _lognormal(
    rng: np.random.Generator, median: float | np.ndarray, sigma, size: int
) -> np.ndarray:
    return np.asarray(median) * np.exp(rng.normal(0.0, 1.0, size) * sigma)


def _choice(rng: np.random.Generator, probs: np.ndarray, size: int) -> np.ndarray:
    """Vectorized categorical draw; ``probs`` is (k,) or (size, k)."""
    cum = np.cumsum(np.broadcast_to(probs, (size, np.shape(probs)[-1])), axis=1)
    u = rng.random(size)[:, None] * cum[:, -1:]
    return np.minimum((cum < u).sum(axis=1), cum.shape[1] - 1)


def generate_day(world: World, params: DatagenParams, day: int, n: int) -> pa.Table:
    """Generate the ``n`` transactions of day index ``day`` as a GENERATED_TRANSACTION table (labels and cohort columns included).

    The table is sorted by timestamp. Deterministic in (``params.seed``, ``day``, ``n``).
    """
    rng = np.random.default_rng([params.seed, 1, day])
    the_date = params.start_date + timedelta(days=day)
    weekday = the_date.weekday()
    k = world.cashiers_per_store
    n_stores = len(world.store_ids)

    # -- where and when
    store = np.repeat(np.arange(n_stores), allocate(n, world.store_weight))
    minute = rng.choice(1440, size=n, p=intraday_density(weekday))
    micros = minute * 60_000_000 + rng.integers(0, 60_000_000, n)
    hour = minute // 60
    open_h = OPENING_HOURS[weekday][0]
    # SCO is busier mid-day, when queues at staffed lanes are long.
    peak = (hour >= 11) & (hour < 19)
    sco = rng.random(n) < world.sco_share[store] * np.where(peak, 1.15, 0.8)
    staffed = ~sco

    # -- who: cashiers on duty in this store and hour, weighted by speed
    slot_holder = world.slot_cashier[:, day]  # (slots,) cashier holding each slot today
    on_duty = np.zeros((n_stores, 24, k))
    shift_start = np.array([SHIFTS[i][0] for i in world.shift])
    shift_end = np.array([SHIFTS[i][1] for i in world.shift])
    hours = np.arange(24)[:, None]
    for s in range(n_stores):  # per store, not per row
        g = s * k + np.arange(k)
        works = ~world.off_days[g, weekday]
        duty = works & (shift_start[g] <= hours) & (hours < shift_end[g])  # (24, k)
        # Edges of the day or a tiny staff: whoever works today (or anyone) covers.
        fallback = works if works.any() else np.ones(k, dtype=bool)
        duty = np.where(duty.any(axis=1, keepdims=True), duty, fallback)
        on_duty[s] = duty / world.speed[slot_holder[g]]
    cashier_local = _choice(rng, on_duty[store, hour], n)
    # One attendant per store and hour watches the SCO bank.
    attendant = np.argmax(on_duty * rng.random(on_duty.shape), axis=2)
    cashier_local = np.where(sco, attendant[store, hour], cashier_local)
    cashier = slot_holder[store * k + cashier_local]
    staffed_lane = (cashier_local + day) % world.n_staffed[store]
    sco_lane = rng.integers(0, 1 << 30, n) % world.n_sco[store]

    # -- fraud labels: a dishonest cashier steals only in some shifts (clustered theft)
    theft_shift = rng.random(len(world.cashier_ids)) < THEFT_SHIFT_SHARE
    dishonest_active = world.dishonest[cashier] & (world.start_day[cashier] <= day)
    dishonest_active &= theft_shift[cashier]
    risky_hour = (hour >= 19) | (hour < open_h + 2)
    p_fraud = fraud_probabilities(
        staffed=staffed,
        dishonest_active=dishonest_active,
        intensity=world.intensity[cashier],
        risky_hour=risky_hour,
        expected_frauds=params.fraud_rate * n,
    )
    is_fraud = rng.random(n) < p_fraud
    use_primary = rng.random(n) < world.primary_prob[cashier]
    favoured = np.where(use_primary, world.patterns[cashier, 0], world.patterns[cashier, 1])
    opportunistic = PATTERN_CODES[_choice(rng, np.asarray(OPPORTUNISTIC_MIX), n)]
    ftype = np.where(sco, SCAN, np.where(dishonest_active, favoured, opportunistic))
    ftype = np.where(is_fraud, ftype, NONE)
    subtle = rng.random(n) < SUBTLE_SHARE

    f_sweet, f_void, f_nosale = ftype == SWEET, ftype == VOID, ftype == NOSALE
    f_refund, f_disc, f_scan = ftype == REFUND, ftype == DISC, ftype == SCAN

    # -- basket: true items in the basket, items actually rung up
    weekend = weekday >= 5
    median_items = np.where(sco, 4.5, 9.0) * (1.15 if weekend else 1.0)
    median_items = np.where(f_sweet | f_disc, 11.0, median_items)
    median_items = np.where(f_scan, 6.0, median_items)
    items_true = np.clip(np.rint(_lognormal(rng, median_items, np.where(sco, 0.7, 0.9), n)), 1, 150)
    items_true = np.where(f_sweet, np.maximum(items_true, 3), items_true)
    items_true = np.where(f_scan, np.maximum(items_true, 2), items_true).astype(np.int64)

    # Sweethearting leaves a few items unrung (a friend's basket is not given away whole);
    # scan avoiders skip one or two dear items, sometimes more.
    unrung = np.zeros(n, dtype=np.int64)
    unrung_sweet = np.where(subtle, 1, np.rint(items_true * rng.uniform(0.2, 0.6, n)))
    unrung_scan = np.where(subtle, 1, np.rint(items_true * rng.uniform(0.2, 0.6, n)))
    unrung = np.where(f_sweet, unrung_sweet, unrung)
    unrung = np.where(f_scan, unrung_scan, unrung)
    unrung = np.clip(unrung, 0, items_true - 1).astype(np.int64)
    unrung = np.where(f_sweet | f_scan, np.maximum(unrung, 1), unrung)
    rung = items_true - unrung

    price_level = _lognormal(rng, 3.9, 0.3, n)
    price_noise = np.exp(rng.normal(0.0, 1.0, n) * 0.55 / np.sqrt(np.maximum(rung, 1)))
    gross = rung * price_level * price_noise
    unit_kg = _lognormal(rng, 0.55, 0.3, n)
    weight_true = items_true * unit_kg * np.exp(rng.normal(0.0, 1.0, n) * 0.5 / np.sqrt(items_true))
    rung_kg = weight_true * rung / items_true  # catalogue weight of what was rung up
    # What goes unscanned tends to be heavy and dear (meat, detergent, bottles).
    hidden_base = weight_true * unrung / items_true
    hidden_kg = hidden_base * np.where(f_scan, rng.uniform(1.2, 2.5, n), 1.0)
    weight_true = weight_true + hidden_kg - hidden_base

    # No-sales: the drawer opened for change, a till check or a cash lift (legit), or to
    # take cash; most are their own transaction (nothing sold), some follow a cash sale.
    legit_nosale = staffed & ~is_fraud & (rng.random(n) < LEGIT_NOSALE_RATE)
    no_sale = np.where(legit_nosale, _choice(rng, np.array([0.85, 0.12, 0.03]), n) + 1, 0)
    nosale_abuse = np.where(subtle, 1, _choice(rng, np.array([0.7, 0.22, 0.08]), n) + 1)
    no_sale = np.where(f_nosale, nosale_abuse, no_sale)
    nosale_only = (no_sale > 0) & (rng.random(n) < 0.7)

    # Refunds: returns at the service desk (staffed lanes), with receipt (to the card used)
    # or without (store credit / cash, capped). Fraudulent ones go to the cashier's own
    # card or a friend's, or are pocketed as cash; amounts stay ordinary.
    legit_refund = staffed & ~is_fraud & ~nosale_only & (rng.random(n) < LEGIT_REFUND_RATE)
    refund = legit_refund | f_refund
    refund_amount = np.where(
        f_refund,
        np.where(subtle, _lognormal(rng, 22.0, 0.5, n), _lognormal(rng, 34.0, 0.6, n)),
        _lognormal(rng, 26.0, 0.95, n),
    )
    refund_amount = np.where(refund, np.clip(refund_amount, 1.0, 900.0), 0.0)
    refund_no_receipt = refund & (rng.random(n) < np.where(f_refund, 0.4, 0.25))
    refund_only = refund & (rng.random(n) < np.where(f_refund, 0.7, 0.5))
    empty = refund_only | nosale_only
    items_true = np.where(empty, 0, items_true)
    rung = np.where(empty, 0, rung)
    unrung = np.where(empty, 0, unrung)
    gross = np.where(empty, 0.0, gross)
    weight_true = np.where(empty, 0.0, weight_true)
    rung_kg = np.where(empty, 0.0, rung_kg)

    # Discounts: promotions, staff discount, clearance markdowns and manager price
    # overrides (damaged goods, price matches) are the honest look-alikes of abuse.
    promo = rng.random(n) < 0.28
    staff_disc = rng.random(n) < 0.03
    disc_frac = np.where(promo, rng.uniform(0.02, 0.15, n), 0.0)
    disc_frac = np.where(staff_disc, np.maximum(disc_frac, rng.uniform(0.1, 0.25, n)), disc_frac)
    clearance = rng.random(n) < 0.025
    disc_frac = np.where(clearance, disc_frac + rng.uniform(0.05, 0.45, n), disc_frac)
    legit_override = rng.random(n) < np.where(staffed, 0.04, 0.003)
    overrides = np.where(legit_override, 1 + (rng.random(n) < 0.15), 0)
    disc_frac = np.where(legit_override, disc_frac + rng.uniform(0.03, 0.3, n), disc_frac)
    abuse_frac = np.where(subtle, rng.uniform(0.1, 0.2, n), rng.uniform(0.12, 0.5, n))
    abuse_overrides = _choice(rng, np.array([0.3, 0.5, 0.2]), n)
    disc_frac = np.where(f_disc, abuse_frac, disc_frac)
    overrides = np.where(f_disc, abuse_overrides, overrides)
    disc_frac = np.minimum(disc_frac, 0.9)
    discount = np.round(np.minimum(gross * disc_frac, gross), 2)
    total = np.round(np.maximum(gross - discount, 0.0), 2)

    # Voids: a mis-scan corrected (cheap line), a customer changing their mind on a dear
    # item (supervisor-approved), sometimes after payment. Abusers mostly skim one ordinary
    # line, some stay just under the review limit, a few void big lines or after payment.
    legit_void = ~is_fraud & ~empty & (rng.random(n) < np.where(staffed, 0.1, 0.04))
    void_count = np.where(legit_void, _choice(rng, np.array([0.85, 0.12, 0.03]), n) + 1, 0)
    line = _lognormal(rng, 1.3, 0.8, n) * price_level
    void_amount = void_count * line
    pricey = legit_void & (rng.random(n) < 0.1)
    void_amount = np.where(pricey, rng.uniform(20.0, 200.0, n), void_amount)
    post_payment = legit_void & (rng.random(n) < 0.08)

    mode = _choice(rng, np.array([0.45, 0.3, 0.1, 0.15]), n)  # skim/under limit/high/post-pay
    abuse_count = np.where(rng.random(n) < 0.8, 1, 2)
    skim = abuse_count * line * 1.5
    under_limit = rng.uniform(VOID_REVIEW_LIMIT - 15.0, VOID_REVIEW_LIMIT - 0.01, n)
    high_value = rng.uniform(40.0, 180.0, n)
    after_pay = rng.uniform(10.0, 60.0, n)
    abuse_amount = np.select(
        [mode == 0, mode == 1, mode == 2], [skim, under_limit, high_value], after_pay
    )
    void_count = np.where(f_void, np.where(subtle, 1, abuse_count), void_count)
    void_amount = np.where(f_void, np.where(subtle, skim, abuse_amount), void_amount)
    post_payment = np.where(f_void, ~subtle & (mode == 3), post_payment)
    void_amount = np.round(np.where(void_count > 0, void_amount, 0.0), 2)

    # Payment (a no-sale on its own opens the cash drawer: "cash").
    pay_probs = np.where(
        sco[:, None],
        np.array([0.1, 0.66, 0.2, 0.04]),
        np.array([0.24, 0.56, 0.15, 0.05]),
    )
    pay_probs = np.where(
        (f_sweet | f_void | f_nosale)[:, None], np.array([0.45, 0.42, 0.1, 0.03]), pay_probs
    )
    pay_probs = np.where(f_refund[:, None], np.array([0.35, 0.55, 0.05, 0.05]), pay_probs)
    payment = np.where(nosale_only, 0, _choice(rng, pay_probs, n))

    colleague = slot_holder[store * k + rng.integers(0, k, n)]
    customer, has_token = customer_tokens(rng, world, store, colleague, payment, n)
    # Sweethearting goes to a friend; fake refunds to the cashier's own card or a friend's.
    friend = world.friends[cashier, rng.integers(0, FRIENDS, n)]
    customer = np.where(f_sweet, friend, customer)
    has_token = np.where(f_sweet, has_token | (rng.random(n) < 0.5), has_token)
    to_own = rng.random(n) < 0.55
    customer = np.where(f_refund, np.where(to_own, world.own_token(cashier), friend), customer)
    has_token = np.where(f_refund, payment != 0, has_token) & ~nosale_only

    # Scale: staffed lanes have no scale (variance 0, basket weight from the catalogue
    # weights of what was rung up); SCO weighs the bagging area: noise, bags, produce and
    # glitches of either sign. Scan avoiders either bag the item on the scale (unexpected
    # weight, often cleared by the attendant) or keep it off the scale (no trace).
    weight_var = np.where(sco, rng.normal(0.0, 0.04, n), 0.0)
    bag = sco & (rng.random(n) < 0.1)
    weight_var = np.where(bag, weight_var + rng.uniform(0.03, 0.3, n), weight_var)
    glitch = sco & (rng.random(n) < SCALE_ERROR_RATE)
    glitch_kg = _lognormal(rng, 0.4, 0.7, n) * np.where(rng.random(n) < 0.7, 1.0, -1.0)
    weight_var = np.where(glitch, glitch_kg, weight_var)
    on_scale = rng.random(n) < 0.55
    scan_var = np.where(subtle, rng.uniform(0.05, 0.3, n), hidden_kg * rng.uniform(0.85, 1.0, n))
    weight_var = np.where(
        f_scan, np.where(on_scale, scan_var, 0.0) + rng.normal(0.0, 0.04, n), weight_var
    )
    weighed = np.where(f_scan & ~on_scale, rung_kg, weight_true)
    basket_kg = np.where(sco, np.maximum(weighed * rng.normal(1.0, 0.01, n), 0.0), rung_kg)

    # Scan duration: payment overhead + items at the cashier's pace; unrung items are still
    # handled (passed around the scanner, or bagged without scanning).
    overhead = np.array([38.0, 22.0, 18.0, 26.0])[payment] * _lognormal(rng, 1.0, 0.25, n)
    per_item = np.where(sco, _lognormal(rng, 6.5, 0.35, n), 3.1 * world.speed[cashier])
    per_item = per_item * _lognormal(rng, 1.0, 0.15, n)
    handled = rung + unrung * np.where(sco, rng.uniform(0.8, 1.2, n), rng.uniform(0.7, 1.0, n))
    duration = overhead + handled * per_item + 12.0 * void_count + 9.0 * no_sale
    duration += np.where(refund, 45.0, 0.0) + 15.0 * overrides + np.where(post_payment, 30.0, 0.0)
    # Scan avoiders dwell a little: waiting for the attendant to look away.
    duration += np.where(f_scan, rng.uniform(0.0, 30.0, n), 0.0)
    duration = np.maximum(duration, 5.0)

    # -- ids, ordering
    order = np.lexsort((micros, store))  # per store, in time order
    seq = np.empty(n, dtype=np.int64)
    store_sorted = store[order]
    starts = np.searchsorted(store_sorted, np.arange(n_stores))
    seq[order] = np.arange(n) - starts[store_sorted] + 1
    final = np.lexsort((seq, store, micros))

    day_start = np.datetime64(datetime.combine(the_date, datetime.min.time()), "us")
    stamp = the_date.strftime("%Y%m%d")
    store_arr = pa.array(world.store_ids)
    prefix = pa.array([f"{sid}-{stamp}-" for sid in world.store_ids])
    max_lanes = int(max(world.n_staffed.max(), world.n_sco.max()))
    lane_names = pa.array(
        [f"{sid}-L{j + 1:02d}" for sid in world.store_ids for j in range(max_lanes)]
        + [f"{sid}-SCO{j + 1}" for sid in world.store_ids for j in range(max_lanes)]
    )
    lane_code = np.where(
        sco, n_stores * max_lanes + store * max_lanes + sco_lane, store * max_lanes + staffed_lane
    )

    def take(values: np.ndarray) -> np.ndarray:
        return values[final]

    ids = pc.binary_join_element_wise(
        prefix.take(pa.array(take(store))),
        pc.utf8_lpad(pc.cast(pa.array(take(seq)), pa.string()), 6, "0"),
        "",
    )
    columns = {
        "transaction_id": ids,
        "timestamp": pa.array(day_start + take(micros).astype("timedelta64[us]")),
        "store_id": store_arr.take(pa.array(take(store))),
        "lane_id": lane_names.take(pa.array(take(lane_code))),
        "lane_type": pa.array(np.asarray(LANE_TYPES, dtype=object)[take(sco.astype(np.int64))]),
        "cashier_id": pa.array(world.cashier_ids).take(pa.array(take(cashier))),
        "item_count": take(rung).astype(np.int32),
        "total_amount": take(total),
        "void_count": take(void_count).astype(np.int32),
        "void_amount": take(void_amount),
        "post_payment_void": take(post_payment).astype(bool),
        "no_sale_count": take(no_sale).astype(np.int32),
        "refund_amount": np.round(take(refund_amount), 2),
        "refund_no_receipt": take(refund_no_receipt),
        "discount_amount": take(discount),
        "price_override_count": take(overrides).astype(np.int32),
        "payment_type": pa.array(np.asarray(PAYMENT_TYPES, dtype=object)[take(payment)]),
        "weight_variance": np.round(take(weight_var), 3),
        "basket_weight_kg": np.round(take(basket_kg), 3),
        "scan_duration_s": np.round(take(duration), 1),
        "customer_token": pa.array(world.customer_tokens).take(
            pa.array(take(customer), mask=~take(has_token))
        ),
        "is_fraud": take(is_fraud),
        "fraud_type": pa.array(np.asarray(FRAUD_TYPES, dtype=object)[take(ftype)]),
        **cohort_columns(world, params, take(cashier)),
    }
    return pa.table(columns, schema=GENERATED_TRANSACTION)


def cohort_columns(world: World, params: DatagenParams, cashier: np.ndarray) -> dict:
    """``schemas.COHORT_LABELS`` of each row's cashier (dates; null = not in the period)."""
    start = np.datetime64(params.start_date, "D")
    out = {}
    for name, day in (
        ("cashier_hired_on", world.hire_day),
        ("cashier_turned_on", world.start_day),
        ("cashier_left_on", world.leave_day),
    ):
        day = day[cashier]
        missing = (day < 0) | (day >= NEVER)
        dates = start + np.where(missing, 0, day).astype("timedelta64[D]")
        out[name] = pa.array(dates, type=pa.date32(), mask=missing)
    return out


def generate(params: DatagenParams) -> Iterator[pa.Table]:
    """Yield one table per day (time-ordered), ``params.rows`` rows in total."""
    params.validate()
    world = make_world(params)
    for day, n in enumerate(day_row_counts(params)):
        if n:
            yield generate_day(world, params, day, int(n))


def rechunk(tables: Iterator[pa.Table], chunk_rows: int) -> Iterator[pa.Table]:
    """Regroup a stream of tables into tables of exactly ``chunk_rows`` rows (last one shorter)."""
    if chunk_rows <= 0:
        raise InputError(f"--chunk-rows must be positive, got {chunk_rows}")
    pending: list[pa.Table] = []
    size = 0
    for table in tables:
        pending.append(table)
        size += table.num_rows
        while size >= chunk_rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, chunk_rows).combine_chunks()
            rest = merged.slice(chunk_rows)
            pending, size = ([rest] if rest.num_rows else []), rest.num_rows
    if size:
        yield pa.concat_tables(pending).combine_chunks()


def summarize(counts: dict[str, int], rows: int) -> list[str]:
    """Human summary lines: rows and the share of each fraud type."""
    fraud = sum(v for k, v in counts.items() if k != "none")
    lines = [f"rows {rows:,}  fraud {fraud:,} ({fraud / max(rows, 1):.2%})"]
    for name in FRAUD_TYPES[1:]:
        c = counts.get(name, 0)
        lines.append(f"  {name:<15} {c:>9,}  {c / max(rows, 1):.3%}")
    return lines
