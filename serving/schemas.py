"""HTTP request and response bodies (msgspec Structs, validated by Litestar on decode).

Required request fields are the seed brief's; every other ``RAW_TRANSACTION`` field is
optional and defaulted by ``features.raw_row`` when absent (``features.REQUEST_DEFAULTS``).
Constraints reject what a POS cannot produce (negative counts, NaN/Infinity - which JSON
cannot carry anyway - absurd magnitudes, unknown enum values) with a 400 naming the field;
bodies are decoded strictly (``serving.body``). These types are the single source of the
request contract: the served OpenAPI schema is msgspec's rendering of them
(``openapi_components``), so the documented and the enforced constraints cannot drift.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

BATCH_LIMIT = 1000
"""Hard upper bound of transactions per batch call (``MAX_BATCH`` may lower it)."""

ID_MAX_LENGTH = 128
"""Longest id (characters, i.e. Unicode code points) accepted for transaction, cashier,
store and lane ids."""

Id = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        description=f"Opaque id: any Unicode text of 1 to {ID_MAX_LENGTH} characters, "
        "compared exactly as sent (no trimming or normalization).",
    ),
]
Timestamp = Annotated[
    dt.datetime,
    Meta(
        # msgspec documents "date-time" only for tz-aware types; a naive (store-local)
        # time without offset is accepted as well.
        extra_json_schema={"format": "date-time"},
        description="Store-local time of the transaction, RFC 3339 (an offset is optional "
        "and ignored: the wall-clock time is used); default: now.",
    ),
]
Count = Annotated[
    float,
    # A whole number: 12 or 12.0, never "12" or 12.5. JSON has one number type and JSON
    # Schema's "integer" includes 12.0, while msgspec's int refuses it; "a number that is a
    # multiple of 1" is the same set in both, so validator and schema agree exactly.
    Meta(ge=0, le=10_000, multiple_of=1, description="A whole number (12 or 12.0)."),
]
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
    timestamp: Timestamp | None = None
    """Store-local time of the transaction (RFC 3339); default: now."""
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


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every 4xx/5xx body: the status, a one-line detail and, for a bad field, where it is."""

    status_code: int
    detail: str
    extra: list[dict[str, Any]] | None = None
    """For field errors: ``[{"message", "key", "source": "body"}]``; ``key`` is the field path
    (``transactions[3].item_count``)."""


API_STRUCTS = (
    PredictRequest,
    BatchRequest,
    PredictResponse,
    BatchResponse,
    Reason,
    ModelInfo,
    ThresholdsInfo,
    Status,
    ErrorBody,
)
"""Every Struct the API reads or writes; each is an OpenAPI component of the same name."""


def openapi_components() -> dict[str, dict[str, Any]]:
    """JSON Schema of every ``API_STRUCTS`` type, as msgspec sees it (what it validates).

    References point at ``#/components/schemas/<Name>``.
    """
    _, components = msgspec.json.schema_components(
        API_STRUCTS, ref_template="#/components/schemas/{name}"
    )
    return components
