"""Register logic: the quality gate and the pyfunc's input/output schema. No I/O.

Quality gate for a candidate model version (metrics of the blend on the TEST subset,
from ``evaluate``'s ``metrics.json`` summary; every threshold behind them fixed on valid):

1. absolute floors: ``blend_pr_auc >= min_pr_auc`` and
   ``blend_recall_at_1pct_fpr >= min_recall_at_1pct_fpr``;
2. not worse than the champion beyond the noise, on the same period: the champion's bundle
   scores the candidate's test rows (``compare.py``); each model flags at its own
   valid-fixed 1% FPR threshold; reject when the 95% interval of the paired recall difference
   (candidate - champion, cashier-block bootstrap) lies entirely below ``-max_regression``.
   When the champion cannot be scored (no bundle, another feature version, no valid-fixed
   threshold) the gate falls back to the champion's recorded metrics
   (``candidate >= champion - max_regression`` for both metrics) and says it is not the same
   period. Skipped, and said so, when there is no champion yet.

Pass -> the alias moves to the candidate; reject -> the alias is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from components.contracts.schemas import (
    TIMESTAMP,
    TRANSACTION_FIELDS,
    InputError,
)

GATED_METRICS = ("blend_pr_auc", "blend_recall_at_1pct_fpr")
METRIC_TAG_PREFIX = "metric."
"""Model-version tags holding the candidate's metrics (``metric.blend_pr_auc`` ...)."""


@dataclass(frozen=True)
class Check:
    """One gate condition and its outcome."""

    name: str
    value: float | None
    bound: float | None
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the quality gate."""

    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        if not failed:
            return "all checks passed: " + "; ".join(_describe(c) for c in self.checks)
        return "rejected: " + "; ".join(_describe(c) for c in failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "checks": [asdict(c) for c in self.checks],
        }


def _describe(c: Check) -> str:
    if c.value is None or c.bound is None:
        return f"{c.name}: {c.note}"
    op = ">=" if c.passed else "<"
    text = f"{c.name} {c.value:.4f} {op} {c.bound:.4f}"
    return f"{text} ({c.note})" if c.note else text


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def gate(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    min_pr_auc: float,
    min_recall_at_1pct_fpr: float,
    max_regression: float,
    comparison: Mapping[str, Any] | None = None,
    not_comparable: str = "",
) -> GateDecision:
    """Apply the quality gate (module docstring) to the candidate's metrics.

    Args:
        candidate: Candidate metrics (the ``metrics.json`` summary).
        champion: Current champion's metrics, or None when there is no champion.
        min_pr_auc: Floor for ``blend_pr_auc``.
        min_recall_at_1pct_fpr: Floor for ``blend_recall_at_1pct_fpr``.
        max_regression: Largest drop tolerated beyond the noise (same period), or of the
            recorded metrics (fallback).
        comparison: ``compare.compare``'s result (champion scored on the candidate's test
            rows), or None when the champion could not be scored.
        not_comparable: Why there is no ``comparison`` (shown in the fallback's checks).
    """
    if max_regression < 0:
        raise InputError(f"--max-regression must be >= 0, got {max_regression}")
    checks: list[Check] = []
    floors = {"blend_pr_auc": min_pr_auc, "blend_recall_at_1pct_fpr": min_recall_at_1pct_fpr}
    for name, floor in floors.items():
        value = _finite(candidate.get(name))
        if value is None:
            checks.append(Check(f"{name} floor", None, floor, False, "candidate metric missing"))
        else:
            checks.append(Check(f"{name} floor", value, floor, value >= floor))
    if champion is not None and comparison is not None:
        diff = comparison["difference"]
        bound = -max_regression
        ours, theirs = comparison["challenger"], comparison["champion"]
        checks.append(
            Check(
                "blend_recall_at_1pct_fpr vs champion, same test rows (95% upper bound of "
                "the paired difference)",
                diff["ci_high"],
                bound,
                diff["ci_high"] >= bound - 1e-12,
                f"candidate {_interval(ours)} vs champion {_interval(theirs)}; "
                f"difference {_interval(diff)}",
            )
        )
        return GateDecision(passed=all(c.passed for c in checks), checks=checks)
    for name in GATED_METRICS:
        label = f"{name} vs champion"
        if not_comparable and champion is not None:
            label += f" (recorded metrics, not the same period: {not_comparable})"
        if champion is None:
            checks.append(Check(label, None, None, True, "no current champion"))
            continue
        reference = _finite(champion.get(name))
        value = _finite(candidate.get(name))
        if reference is None:
            checks.append(Check(label, None, None, True, "champion has no such metric"))
        elif value is None:
            checks.append(Check(label, None, None, False, "candidate metric missing"))
        else:
            bound = reference - max_regression
            checks.append(
                Check(
                    label,
                    value,
                    bound,
                    value >= bound - 1e-12,
                    f"champion {reference:.4f} - max regression {max_regression:g}",
                )
            )
    return GateDecision(passed=all(c.passed for c in checks), checks=checks)


def _interval(r: Mapping[str, Any]) -> str:
    return f"{r['value']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"


def metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Model-version tags for the candidate's metrics (strings, finite values only)."""
    return {
        f"{METRIC_TAG_PREFIX}{k}": repr(float(v))
        for k, v in metrics.items()
        if _finite(v) is not None
    }


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    """Inverse of ``metric_tags``."""
    out = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG_PREFIX) and _finite(value) is not None:
            out[key[len(METRIC_TAG_PREFIX) :]] = float(value)
    return out


MODEL_ROLES = ("xgb_model", "iforest_model")
"""Keys of ``metrics.json``'s ``inputs.model_digests``: the two model folders evaluated."""


def evaluated_digests(metrics: Mapping[str, Any], *, source: str) -> dict[str, dict[str, str]]:
    """The model-file digests an evaluation recorded (``inputs.model_digests``).

    Raises:
        InputError: The evaluation records none (made before digests existed, or edited).
    """
    digests = (metrics.get("inputs") or {}).get("model_digests")
    ok = isinstance(digests, dict) and all(
        isinstance(digests.get(role), dict) and digests[role] for role in MODEL_ROLES
    )
    if not ok:
        raise InputError(
            f"{source}: no 'inputs.model_digests' for {' and '.join(MODEL_ROLES)}: cannot tell "
            "which models were evaluated (re-run evaluate on these models)"
        )
    return {role: {str(k): str(v) for k, v in digests[role].items()} for role in MODEL_ROLES}


def check_digests(
    evaluated: Mapping[str, Mapping[str, str]],
    actual: Mapping[str, Mapping[str, str | None]],
    *,
    folders: Mapping[str, str],
    source: str,
) -> None:
    """Refuse model files that are not byte-for-byte the ones the evaluation scored.

    Args:
        evaluated: role -> file name -> sha256 recorded by evaluate.
        actual: role -> file name -> sha256 of the file given to register (None: absent).
        folders: role -> the model folder given on the command line (named in the error).
        source: The evaluation's metrics file (named in the error).

    Raises:
        InputError: Naming the first file that differs or is missing.
    """
    for role in MODEL_ROLES:
        for name, digest in actual.get(role, {}).items():
            expected = evaluated.get(role, {}).get(name)
            where = f"{folders[role].rstrip('/')}/{name}"
            if expected is None:
                raise InputError(f"{where}: not among the files evaluated in {source}")
            if digest is None:
                raise InputError(f"{where}: missing, but {source} evaluated it")
            if digest != expected:
                raise InputError(
                    f"{where}: sha256 {digest[:12]}... is not the model evaluated in {source} "
                    f"({expected[:12]}...): refusing to register a model that was not evaluated"
                )


_MLFLOW_TYPES = {
    "string": "string",
    str(TIMESTAMP): "string",  # ISO-8601 text, what the API receives
    "int32": "long",  # so JSON integers pass MLflow's schema enforcement
    "double": "double",
    "bool": "boolean",
}
"""MLflow column type of each Arrow type in ``TRANSACTION_FIELDS``."""


def model_signature():
    """The pyfunc's ``ModelSignature``: raw transaction fields in, risk score/level out.

    Derived from ``TRANSACTION_FIELDS``: the seed brief's fields are required, every other
    field is optional (``required=False``). ``timestamp`` is an ISO-8601 string (what the
    API receives); counts are ``long`` so JSON integers pass MLflow's schema enforcement.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [
        ColSpec(_MLFLOW_TYPES[str(f.domain.arrow)], f.name, required=f.required)
        for f in TRANSACTION_FIELDS
    ]
    outputs = Schema(
        [
            ColSpec("string", "transaction_id"),
            ColSpec("double", "risk_score"),
            ColSpec("string", "risk_level"),
            ColSpec("string", "action"),
        ]
    )
    return ModelSignature(inputs=Schema(inputs), outputs=outputs)
