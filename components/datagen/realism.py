"""Realism report of labelled transactions: how easy is the world? Pure (tables in, dict out).

Loss-prevention teams would not recognise a world where one raw field separates a fraud
pattern from honest work, or where a thief steals on every fifth basket. The report measures:

* **best single field per fraud type**: for every raw numeric field of a transaction (both
  directions: high or low values suspicious) and two ratios an analyst computes by hand
  (``discount_ratio``, ``abs_weight_variance``), the recall at 1 % FPR. The threshold is chosen
  on one half of the honest rows (a seeded random half) and the false-alarm rate is measured
  on the other half; recall is measured on every row of the type (no fraud row chooses a
  threshold). Rows strictly above the threshold alarm, so ties at a common value (0 voids) never
  alarm.
* **theft per shift**: events of cashier fraud (every type but ``scan_avoidance``) per
  dishonest cashier per shift worked (a shift = one cashier on one day with staffed
  transactions), median and p90, over all shifts worked while dishonest and over shifts with
  theft only, plus the share of shifts with any theft.
* **fraud share per transaction**: overall and among dishonest cashiers' staffed transactions.
* **cohort sizes** (from the cohort label columns ``GENERATED_TRANSACTION`` adds, when present):
  established cashiers, new hires per week, late turners, leavers, thieves.

Dishonest cashiers are those with a ``cashier_turned_on`` date when the column is present,
otherwise cashiers with cashier fraud on at least ``MIN_THEFT_DAYS`` distinct days.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from components.contracts.schemas import TRANSACTION_FIELDS

SINGLE_FIELDS = tuple(
    f.name
    for f in TRANSACTION_FIELDS
    if pa.types.is_integer(f.domain.arrow)
    or pa.types.is_floating(f.domain.arrow)
    or pa.types.is_boolean(f.domain.arrow)
)
"""Raw transaction fields tried one at a time: every numeric or flag field of the contract."""
RATIOS = ("discount_ratio", "abs_weight_variance")
"""Hand-computed ratios tried too (what an exception report would sort by)."""
FPR = 0.01
MIN_THEFT_DAYS = 3
"""Without cohort columns: cashier fraud on this many distinct days makes a cashier a thief."""
CUSTOMER_TYPES = ("scan_avoidance",)
"""Fraud committed by customers, not cashiers."""


def _candidates(df: pd.DataFrame) -> dict[str, np.ndarray]:
    cols = {f: df[f].to_numpy(dtype=np.float64, na_value=np.nan) for f in SINGLE_FIELDS if f in df}
    gross = df["total_amount"].to_numpy(np.float64) + df["discount_amount"].to_numpy(np.float64)
    cols["discount_ratio"] = np.divide(
        df["discount_amount"].to_numpy(np.float64),
        gross,
        out=np.zeros(len(df)),
        where=gross > 0,
    )
    cols["abs_weight_variance"] = np.abs(cols["weight_variance"])
    out: dict[str, np.ndarray] = {}
    for name, values in cols.items():
        out[name] = values
        if name not in ("abs_weight_variance",):
            out[f"-{name}"] = -values  # low values suspicious
    return out


def recall_at_fpr(
    honest_fit: np.ndarray, honest_check: np.ndarray, fraud: np.ndarray, fpr: float = FPR
) -> tuple[float, float, float]:
    """(recall, measured FPR, threshold): alarm when a value is strictly above the threshold.

    The threshold is the smallest honest_fit value with at most ``fpr`` of honest_fit above
    it; missing values (NaN) never alarm.
    """
    fit = np.sort(np.nan_to_num(honest_fit, nan=-np.inf))
    k = int(np.floor(fpr * fit.size))  # rows allowed above the threshold
    threshold = fit[fit.size - 1 - k] if fit.size else np.inf
    alarm_fraud = np.nan_to_num(fraud, nan=-np.inf) > threshold
    alarm_check = np.nan_to_num(honest_check, nan=-np.inf) > threshold
    recall = float(alarm_fraud.mean()) if fraud.size else float("nan")
    return (
        recall,
        float(alarm_check.mean()) if honest_check.size else float("nan"),
        float(threshold),
    )


def best_single_fields(df: pd.DataFrame, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per fraud type: the single field (or ratio) with the highest recall at 1 % FPR."""
    cands = _candidates(df)
    ftype = df["fraud_type"].to_numpy()
    honest = ~df["is_fraud"].to_numpy(dtype=bool)
    half = np.random.default_rng(seed).random(len(df)) < 0.5
    fit_rows, check_rows = honest & half, honest & ~half
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(ftype[~honest])):
        rows = ftype == name
        best: dict[str, Any] = {"field": None, "recall": -1.0}
        for field, values in cands.items():
            recall, fpr, thr = recall_at_fpr(values[fit_rows], values[check_rows], values[rows])
            if recall > best["recall"]:
                best = {"field": field, "recall": recall, "fpr": fpr, "threshold": thr}
        out[name] = {**best, "rows": int(rows.sum())}
    return out


def _dishonest(df: pd.DataFrame, cashier_fraud: np.ndarray) -> pd.Series:
    """Per cashier: first day of stealing (NaT for honest cashiers)."""
    if "cashier_turned_on" in df:
        return df.groupby("cashier_id")["cashier_turned_on"].first()
    days = df.loc[cashier_fraud].groupby("cashier_id")["date"].agg(["nunique", "min"])
    turned = days.loc[days["nunique"] >= MIN_THEFT_DAYS, "min"]
    return turned.reindex(df["cashier_id"].unique())


def theft_per_shift(df: pd.DataFrame) -> dict[str, Any]:
    """Cashier fraud events per dishonest cashier per shift worked while dishonest."""
    cashier_fraud = (
        df["is_fraud"].to_numpy(bool) & ~df["fraud_type"].isin(CUSTOMER_TYPES).to_numpy()
    )
    staffed = df["lane_type"].to_numpy() == "staffed"
    thieves = pd.to_datetime(_dishonest(df, cashier_fraud)).dropna()
    rows = staffed & df["cashier_id"].isin(thieves.index).to_numpy()
    sub = df.loc[rows, ["cashier_id", "date"]].assign(theft=cashier_fraud[rows].astype(np.int64))
    if len(sub):
        since = sub["cashier_id"].map(thieves.to_dict())
        sub = sub[(pd.to_datetime(sub["date"]) >= pd.to_datetime(since)).to_numpy()]
    shifts = sub.groupby(["cashier_id", "date"])["theft"].agg(["sum", "size"])
    events = shifts["sum"].to_numpy(np.float64)
    with_theft = events[events > 0]

    def q(values: np.ndarray, p: float) -> float:
        return float(np.quantile(values, p)) if values.size else float("nan")

    return {
        "thieves": int(thieves.size),
        "shifts": int(events.size),
        "share_of_shifts_with_theft": float((events > 0).mean()) if events.size else float("nan"),
        "events_per_shift_median": q(events, 0.5),
        "events_per_shift_p90": q(events, 0.9),
        "events_per_theft_shift_median": q(with_theft, 0.5),
        "events_per_theft_shift_p90": q(with_theft, 0.9),
        "fraud_share_of_thieves_transactions": float(
            shifts["sum"].sum() / max(shifts["size"].sum(), 1)
        ),
    }


def cohorts(df: pd.DataFrame) -> dict[str, Any]:
    """Cashier counts per cohort, from the cohort label columns (empty without them)."""
    if "cashier_hired_on" not in df:
        return {}
    per = df.groupby("cashier_id")[["cashier_hired_on", "cashier_turned_on", "cashier_left_on"]]
    per = per.first()
    start = pd.to_datetime(df["date"]).min()
    hired = pd.to_datetime(per["cashier_hired_on"])
    turned = pd.to_datetime(per["cashier_turned_on"])
    new = hired.notna()
    weeks = ((hired[new] - start).dt.days // 7).value_counts().sort_index()
    return {
        "cashiers": len(per),
        "established": int((~new).sum()),
        "new_hires": int(new.sum()),
        "new_hires_per_week": {str(k): int(v) for k, v in weeks.items()},
        "thieves": int(turned.notna().sum()),
        "late_turners": int((turned > start).sum()),
        "leavers": int(per["cashier_left_on"].notna().sum()),
        "thieves_who_leave": int((turned.notna() & per["cashier_left_on"].notna()).sum()),
    }


def realism_report(table: pa.Table | pd.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """The whole report (see the module docstring) as a JSON-ready dict."""
    df = table.to_pandas() if isinstance(table, pa.Table) else table.copy()
    df["date"] = pd.to_datetime(df["timestamp"]).dt.normalize()
    fraud = df["is_fraud"].to_numpy(bool)
    return {
        "rows": len(df),
        "fraud_share": float(fraud.mean()),
        "fraud_rows_per_type": {
            str(k): int(v) for k, v in df.loc[fraud, "fraud_type"].value_counts().items()
        },
        "best_single_field_at_1pct_fpr": best_single_fields(df, seed=seed),
        "theft_per_shift": theft_per_shift(df),
        "cohorts": cohorts(df),
    }


def format_report(report: dict[str, Any]) -> list[str]:
    """Human-readable table lines of ``realism_report``'s result."""
    lines = [f"rows {report['rows']:,}  fraud share {report['fraud_share']:.3%}", ""]
    lines.append(f"{'fraud type':<16} {'rows':>7}  {'best single field':<24} {'recall@1%FPR':>12}")
    for name, best in report["best_single_field_at_1pct_fpr"].items():
        lines.append(
            f"{name:<16} {best['rows']:>7}  {best['field'] or '-':<24} {best['recall']:>12.3f}"
        )
    t = report["theft_per_shift"]
    lines += [
        "",
        f"thieves {t['thieves']}  shifts worked while dishonest {t['shifts']}  "
        f"with theft {t['share_of_shifts_with_theft']:.1%}",
        f"events per shift: median {t['events_per_shift_median']:.1f}  "
        f"p90 {t['events_per_shift_p90']:.1f}  (theft shifts only: median "
        f"{t['events_per_theft_shift_median']:.1f}  p90 {t['events_per_theft_shift_p90']:.1f})",
        f"fraud share of thieves' staffed transactions {t['fraud_share_of_thieves_transactions']:.2%}",
    ]
    if report["cohorts"]:
        c = report["cohorts"]
        lines += [
            "",
            "cohorts: " + "  ".join(f"{k} {v}" for k, v in c.items() if not isinstance(v, dict)),
            "new hires per week: "
            + "  ".join(f"w{k}:{v}" for k, v in c["new_hires_per_week"].items()),
        ]
    return lines
