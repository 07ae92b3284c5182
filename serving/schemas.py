"""HTTP request and response bodies (msgspec Structs, validated by Litestar on decode).

The request is derived from the one transaction spec (``schemas.TRANSACTION_FIELDS``): its
required fields are the seed brief's; every other ``RAW_TRANSACTION`` field is optional: absent
means missing to the models (``features.raw_row``, ``features.MISSING_INPUT_FEATURES``). Constraints
reject what a POS cannot produce (negative counts, NaN/Infinity - which JSON cannot carry
anyway - absurd magnitudes, unknown enum values) with a 400 naming the field; bodies are
decoded strictly (``serving.body``). These types are the single source of the request
contract: the served OpenAPI schema is msgspec's rendering of them (``openapi_components``),
so the documented and the enforced constraints cannot drift.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from components.contracts.schemas import (
    ACTIONS,
    ID_MAX_LENGTH,  # noqa: F401  (re-exported: part of the HTTP contract)
    RISK_LEVELS,
    TRANSACTION_FIELDS,
    Domain,
)

BATCH_LIMIT = 1000
"""Hard upper bound of transactions per batch call (``MAX_BATCH`` may lower it)."""

RiskLevel = Literal[RISK_LEVELS]
Action = Literal[tuple(ACTIONS.values())]


def request_type(domain: Domain) -> Any:
    """The msgspec type (with its ``Meta`` constraints) of a request field in ``domain``."""
    if domain.values:
        return Literal[domain.values]
    arrow = str(domain.arrow)
    if arrow == "bool":
        return bool
    if arrow == "string":
        meta = Meta(min_length=1, max_length=domain.max_length, description=domain.description)
        return Annotated[str, meta]
    if arrow.startswith("timestamp"):
        # msgspec documents "date-time" only for tz-aware types; a naive (store-local)
        # time without offset is accepted as well.
        meta = Meta(extra_json_schema={"format": "date-time"}, description=domain.description)
        return Annotated[dt.datetime, meta]
    # Counts are floats that are whole numbers: 12 or 12.0, never "12" or 12.5. JSON has one
    # number type and JSON Schema's "integer" includes 12.0, while msgspec's int refuses it;
    # "a number that is a multiple of 1" is the same set in both, so validator and schema
    # agree exactly.
    bounds = {"ge": domain.ge, "le": domain.le, "multiple_of": 1 if domain.whole else None}
    meta = Meta(
        **{k: v for k, v in bounds.items() if v is not None}, description=domain.description
    )
    return Annotated[float, meta]


class _TransactionMapping(msgspec.Struct, kw_only=True):
    # ``features.raw_row`` reads a Mapping; these two methods make the Struct one without
    # building a dict per request.
    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


PredictRequest = msgspec.defstruct(
    "PredictRequest",
    [
        *((f.name, request_type(f.domain)) for f in TRANSACTION_FIELDS if f.required),
        *(
            (f.name, request_type(f.domain) | None, None)
            for f in TRANSACTION_FIELDS
            if not f.required
        ),
    ],
    bases=(_TransactionMapping,),
    module=__name__,
    namespace={"__doc__": "One POS transaction to score."},
    kw_only=True,
)
"""One POS transaction to score: ``TRANSACTION_FIELDS``, required ones first."""


class Reason(msgspec.Struct, kw_only=True):
    """A feature that pushed the score up, with its contribution to the XGBoost log-odds."""

    feature: str
    contribution: float


class AnomalyReason(msgspec.Struct, kw_only=True):
    """An anomaly feature far from its norm: ``|value - median| / robust spread`` of the
    feature on the train period's honest transactions."""

    feature: str
    deviation: float


Channel = Literal["supervised", "anomaly", "both"]


class PredictResponse(msgspec.Struct, kw_only=True):
    """The brief's response plus model_version and reason codes (additive fields)."""

    transaction_id: str
    risk_score: Annotated[float, Meta(ge=0.0, le=100.0)]
    risk_level: RiskLevel
    action: Action
    latency_ms: float
    model_version: str
    reasons: list[Reason]
    profile_source: Literal["live", "frozen"] = "frozen"
    """``live``: the cashier's profile from the online store, this transaction folded in;
    ``frozen``: the bundle's profile (store off, unreachable or past its deadline)."""
    features: list[float] | msgspec.UnsetType = msgspec.UNSET
    """The feature vector scored (``FEATURE_NAMES`` order); only with ``DEBUG_FEATURES``."""
    channel: Channel | None = None
    """Which channel reached the risk level: the supervised model (known patterns), the
    anomaly model (unusual behaviour), both; null for Low (and bundles before channels)."""
    anomaly_reasons: list[AnomalyReason] = msgspec.field(default_factory=list)
    """The anomaly channel's reason codes when it fired (``channel`` anomaly or both): its
    features furthest from their train-period honest norm; empty otherwise."""


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
    AnomalyReason,
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
