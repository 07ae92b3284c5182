"""HTTP request and response bodies (msgspec Structs, validated by Litestar on decode).

Required request fields are the seed brief's; every other ``RAW_TRANSACTION`` field is
optional and defaulted by ``features.raw_row`` when absent (``features.REQUEST_DEFAULTS``).
Constraints reject what a POS cannot produce (negative counts, NaN/Infinity - which JSON
cannot carry anyway - absurd magnitudes, unknown enum values) with a 400 naming the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

BATCH_LIMIT = 1000
"""Hard upper bound of transactions per batch call (``MAX_BATCH`` may lower it)."""

Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Count = Annotated[int, Meta(ge=0, le=10_000)]
Amount = Annotated[float, Meta(ge=0.0, le=10_000_000.0)]
Signed = Annotated[float, Meta(ge=-10_000.0, le=10_000.0)]
Seconds = Annotated[float, Meta(ge=0.0, le=86_400.0)]
LaneType = Literal["staffed", "self_checkout"]
PaymentType = Literal["cash", "card", "mobile", "gift_card"]
RiskLevel = Literal["Low Risk", "Medium Risk", "High Risk"]
Action = Literal["Log only", "Flag for post-shift audit", "Hold transaction: supervisor review"]


class PredictRequest(msgspec.Struct, kw_only=True):
    """One POS transaction to score."""

    transaction_id: Id
    cashier_id: Id
    item_count: Count
    total_amount: Amount
    void_count: Count
    no_sale_count: Count
    weight_variance: Signed
    timestamp: dt.datetime | None = None
    """Store-local time of the transaction (ISO-8601); default: now."""
    store_id: Id | None = None
    """Store; default: the cashier's home store from the profiles."""
    lane_id: Id | None = None
    lane_type: LaneType | None = None
    void_amount: Amount | None = None
    post_payment_void: bool | None = None
    refund_amount: Amount | None = None
    refund_no_receipt: bool | None = None
    discount_amount: Amount | None = None
    price_override_count: Count | None = None
    payment_type: PaymentType | None = None
    basket_weight_kg: Annotated[float, Meta(ge=0.0, le=100_000.0)] | None = None
    scan_duration_s: Seconds | None = None

    # ``features.raw_row`` reads a Mapping; these two methods make the Struct one without
    # building a dict per request.
    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


class Reason(msgspec.Struct, kw_only=True):
    """A feature that pushed the score up, with its contribution to the XGBoost log-odds."""

    feature: str
    contribution: float


class PredictResponse(msgspec.Struct, kw_only=True):
    """The brief's response plus model_version and reason codes (additive fields)."""

    transaction_id: str
    risk_score: Annotated[float, Meta(ge=0.0, le=100.0)]
    risk_level: RiskLevel
    action: Action
    latency_ms: float
    model_version: str
    reasons: list[Reason]


class BatchRequest(msgspec.Struct, kw_only=True):
    """Up to ``BATCH_LIMIT`` transactions (``MAX_BATCH`` may set a lower limit)."""

    transactions: Annotated[list[PredictRequest], Meta(min_length=1, max_length=BATCH_LIMIT)]


class BatchResponse(msgspec.Struct, kw_only=True):
    predictions: list[PredictResponse]
    count: int
    latency_ms: float
    model_version: str


class ThresholdsInfo(msgspec.Struct, kw_only=True):
    high: float
    medium: float


class ModelInfo(msgspec.Struct, kw_only=True):
    """What is being served: registry identity, training metrics, thresholds, digest."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    trained_at: str | None
    source: str
    bundle_sha256: str
    schema_version: int
    feature_version: int
    metrics: dict[str, Any]
    thresholds: ThresholdsInfo
    xgb_trees: int
    iforest_trees: int
    features: list[str]


class Status(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: str
    model_version: str | None = None
    detail: str | None = None
