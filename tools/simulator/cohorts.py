"""Online quality per cashier cohort, and live-vs-frozen profile runs side by side.

The cohorts are ``components.contracts.cohorts``'s (the same derivation as evaluate's
table) with the live stream's first day as the cut: ``established`` cashiers were hired
before it (the frozen profiles know them), ``new_hires`` on or after it (no frozen profile:
only the live store learns them), ``late_turners`` started stealing on or after it (their
frozen profile is an honest one), ``thieves`` stole at any time up to the last replayed day.
For each: transactions, frauds, recall and false-alarm rate with the alert at Medium+ and
at High (95% cashier-block bootstrap intervals), and the new-hire false-alarm ratio (new
hires' false-alarm rate over established cashiers', same resamples).

Compare two runs (the app served with ``PROFILE_STORE=frozen`` and with the live store)::

    python -m tools.simulator.compare frozen=var/sim-frozen.json live=var/sim-live.json
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from components.contracts.bootstrap import Blocks
from components.contracts.cohorts import DATE_COHORTS, as_days, date_cohorts, has_dates
from components.contracts.schemas import RISK_LEVELS
from tools.simulator.logic import FLAGGED_LEVELS, RequestResult

CohortDates = Mapping[str, tuple[Any, Any]]
"""``transaction_id -> (cashier_hired_on, cashier_turned_on)`` from the live labels."""


def load_cohort_dates(uri: str) -> dict[str, tuple[Any, Any]] | None:
    """The live labels' cohort dates by transaction id; None when the file has none (older
    data: the columns are absent or all null)."""
    from components.contracts import storage
    from components.contracts.schemas import LIVE_LABELS

    table = storage.read_table(uri, LIVE_LABELS, require_marker=False)
    hired, turned = (table.column(c).to_pylist() for c in ("cashier_hired_on", "cashier_turned_on"))
    if not has_dates(hired, turned):
        return None
    pairs = zip(hired, turned, strict=True)
    return dict(zip(table.column("transaction_id").to_pylist(), pairs, strict=True))


def _clean(r: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}


def quality_by_cohort(
    results: Sequence[RequestResult],
    transactions: Sequence[Mapping],
    labels: Mapping[str, tuple],
    dates: CohortDates,
    *,
    alert_score: float | None = None,
) -> dict | None:
    """Per-cohort online quality of the answered, labelled requests.

    Args:
        results: Request outcomes (``index`` into ``transactions``); failed ones are skipped.
        transactions: The replayed request bodies (``cashier_id``, ISO ``timestamp``).
        labels: ``transaction_id -> (is_fraud, fraud_type)`` (the simulator's labels).
        dates: ``transaction_id -> (cashier_hired_on, cashier_turned_on)``.
        alert_score: Also alert at ``risk_score >= alert_score`` (e.g. evaluate's
            valid-fixed 1%-FPR threshold, ``threshold_at_1pct_fpr`` in ``blend.json``).

    Returns:
        None when no answered request has a label; else ``cut`` (ISO day: the first replayed
        day), ``alerts`` (the alert rules: each ``FLAGGED_LEVELS`` level or above, and the
        score rule), ``cohorts`` (name -> ``transactions``, ``frauds`` and, per alert,
        ``recall`` / ``false_alarm_rate`` with intervals) and ``new_hire_false_alarm_ratio``
        (alert -> value with interval).
    """
    rank = {level: i for i, level in enumerate(RISK_LEVELS)}
    rows = [
        (r, transactions[r.index])
        for r in results
        if r.ok and r.risk_level in rank and r.transaction_id in labels
    ]
    if not rows:
        return None
    tids = [r.transaction_id for r, _ in rows]
    level = np.array([rank[r.risk_level] for r, _ in rows])
    fraud = np.array([bool(labels[t][0]) for t in tids])
    days = as_days([str(tx["timestamp"])[:10] for _, tx in rows])
    hired, turned = zip(*(dates.get(t, (None, None)) for t in tids), strict=True)
    masks = date_cohorts(hired, turned, cut=days.min(), end=days.max() + 1)
    cashier = np.array([str(tx["cashier_id"]) for _, tx in rows])
    blocks = Blocks(cashier)
    flagged = {f"{lv} or above": level >= rank[lv] for lv in FLAGGED_LEVELS}
    if alert_score is not None:
        score = np.array([r.risk_score for r, _ in rows], dtype=np.float64)
        flagged[f"risk_score >= {alert_score:g}"] = score >= alert_score
    cohorts = {}
    for name, m in masks.items():
        cohorts[name] = {
            "cashiers": len(set(cashier[m].tolist())),
            "transactions": int(m.sum()),
            "frauds": int((m & fraud).sum()),
            **{
                lv: {
                    "recall": _clean(blocks.rate(f, fraud, m)),
                    "false_alarm_rate": _clean(blocks.rate(f, ~fraud, m)),
                }
                for lv, f in flagged.items()
            },
        }
    legit = ~fraud
    ratio = {
        lv: _clean(blocks.rate_ratio(f, masks["new_hires"] & legit, masks["established"] & legit))
        for lv, f in flagged.items()
    }
    return {
        "cut": str(days.min()),
        "alerts": list(flagged),
        "cohorts": cohorts,
        "new_hire_false_alarm_ratio": ratio,
    }


def _ci(r: Mapping | None) -> str:
    if not r or r.get("value") is None:
        return "-"
    lo, hi = (r.get(k) for k in ("ci_low", "ci_high"))
    bounds = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{r['value']:.3f}{bounds}"


def format_cohort_table(reports: Mapping[str, Mapping]) -> str:
    """Per-cohort recall and false-alarm rate of one or more simulator reports, side by side
    (e.g. ``{"frozen": ..., "live": ...}``), then the new-hire false-alarm ratio."""
    runs = {name: r["cohorts"] for name, r in reports.items() if r.get("cohorts")}
    if not runs:
        return "cohorts: no cohort dates in the live labels (older data)"
    first = next(iter(runs.values()))
    lines = [
        f"online quality per cohort (cut {first['cut']}: hired / turned on or after it = "
        "new hire / late turner); recall and false-alarm rate [95% cashier-block bootstrap; "
        "a cohort of one cashier has no spread of its own]"
    ]
    for lv in first["alerts"]:
        lines.append(f"  alert at {lv}")
        lines.append(
            f"    {'cohort':<13}{'cashiers':>9}{'n':>7}{'frauds':>7}  "
            + "  ".join(
                f"{run + ' recall':<22}{run + ' false alarms':<24}" for run in runs
            ).rstrip()
        )
        for name in (n for n in DATE_COHORTS if n in first["cohorts"]):  # JSON may sort keys
            c = first["cohorts"][name]
            cells = "  ".join(
                f"{_ci(q['cohorts'][name][lv]['recall']):<22}"
                f"{_ci(q['cohorts'][name][lv]['false_alarm_rate']):<24}"
                for q in runs.values()
            )
            n = f"{c.get('cashiers', '-'):>9}{c['transactions']:>7}{c['frauds']:>7}"
            lines.append(f"    {name:<13}{n}  {cells}".rstrip())
        lines.append(
            "    new-hire false-alarm ratio (vs established, target <= 1.5): "
            + ", ".join(
                f"{run} {_ci(q['new_hire_false_alarm_ratio'][lv])}" for run, q in runs.items()
            )
        )
    return "\n".join(lines)
