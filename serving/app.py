"""The Litestar app factory: ``create_app(settings) -> Litestar``.

Routes: ``POST /v1/predict``, ``POST /v1/predict/batch``, ``GET /v1/model``, ``GET /healthz``
(liveness), ``GET /readyz`` (model loaded and self-test scored), ``GET /metrics``
(Prometheus), OpenAPI docs under ``/schema``.

The model is loaded when the factory runs (``model_loader.get_model``, cached per process),
never in the ASGI lifespan: Mangum with ``lifespan="auto"`` re-runs the lifespan on every
Lambda invocation. A bad bundle makes the factory raise, so the server refuses to start.

One pure-ASGI middleware does API-key checks, the body-size limit and request metrics; it
adds no per-request logging (the hot path logs nothing at INFO). A client that hangs up
before its request body arrived is counted with status 499 (nginx's "client closed
request"), not as a server error: the error-ratio alert counts 5xx only.

JSON bodies are decoded by ``serving.body.decode_body`` (strict types, no duplicate keys,
bounded nesting, UTF-8 and ``application/json`` only) through ``StrictJSONRequest``; the
OpenAPI components are msgspec's own schema of ``serving.schemas`` (``_msgspec_components``).
"""

from __future__ import annotations

import hmac
import logging
import re
import sys
import time
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import OpenAPI, Reference, Schema
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from components.contracts import features as feats
from serving import model_loader, prepare_numba_cache
from serving.body import BodyError, decode_body
from serving.metrics import CONTENT_TYPE, EmfMetrics, ServingMetrics
from serving.model_loader import LoadedModel
from serving.schemas import (
    BATCH_LIMIT,
    AnomalyReason,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    Reason,
    Status,
    ThresholdsInfo,
    openapi_components,
)
from serving.scorer import Scored
from serving.settings import ServingSettings
from serving.store import LiveProfiles, build_store

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ROUTES = frozenset(
    {"/v1/predict", "/v1/predict/batch", "/v1/model", "/healthz", "/readyz", "/metrics"}
)
T0_KEY = "pos_risk_t0"
DISCONNECTED_KEY = "pos_risk_client_disconnected"
CLIENT_CLOSED_REQUEST = 499
"""Status recorded (never sent) when the client hung up before the response started."""
BODY_DECODER = "body_decoder"
"""Route ``opt`` key: the strict ``msgspec.json.Decoder`` of the route's ``data`` type."""

_UNAUTHORIZED = b'{"status_code":401,"detail":"missing or invalid API key (send header X-API-Key)"}'
_TOO_LARGE = b'{"status_code":413,"detail":"request body larger than %d bytes"}'


def _json_response_messages(status: int, body: bytes) -> tuple[Message, Message]:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def edge_middleware(settings: ServingSettings, metrics: ServingMetrics):
    """Middleware factory: API key, body-size limit, metrics (route, method, status, latency)."""
    key = settings.api_key.encode() if settings.api_key else None
    open_paths = OPEN_PATHS if settings.metrics_require_key else OPEN_PATHS | {"/metrics"}
    open_paths = open_paths | {p for p in ("/schema",)}
    max_body = settings.max_body_bytes

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            t0 = time.perf_counter()
            scope[T0_KEY] = t0  # type: ignore[literal-required]
            path = scope["path"]
            route = path if path in ROUTES else "other"
            status_box = [500]
            started = [False]

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status_box[0] = message["status"]
                    started[0] = True
                await send(message)

            async def receive_wrapper() -> Message:
                message = await receive()
                if message["type"] == "http.disconnect" and not started[0]:
                    scope[DISCONNECTED_KEY] = True  # type: ignore[literal-required]
                return message

            reject: tuple[int, bytes] | None = None
            if key is not None and path not in open_paths and not path.startswith("/schema"):
                provided = _header(scope, b"x-api-key")
                if provided is None or not hmac.compare_digest(provided, key):
                    reject = (401, _UNAUTHORIZED)
            if reject is None:
                length = _header(scope, b"content-length")
                if length is not None and length.isdigit() and int(length) > max_body:
                    reject = (413, _TOO_LARGE % max_body)
            try:
                if reject is not None:
                    for message in _json_response_messages(*reject):
                        await send_wrapper(message)
                else:
                    await app(scope, receive_wrapper, send_wrapper)
            finally:
                status = CLIENT_CLOSED_REQUEST if scope.get(DISCONNECTED_KEY) else status_box[0]
                metrics.observe_request(route, scope["method"], status, time.perf_counter() - t0)
                metrics.flush()

        return middleware

    return factory


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return v
    return None


class StrictJSONRequest(Request):
    """A request whose JSON body is decoded by ``decode_body`` into the route's data type.

    Litestar's own path decodes untyped and then converts with ``strict=False`` (so ``"12"``
    would pass as an int); routes with a body set this class and ``opt[BODY_DECODER]``.
    The result is the Struct itself, which Litestar's signature model passes through.
    """

    async def json(self) -> Any:
        decoder = self.route_handler.opt[BODY_DECODER]
        try:
            return decode_body(await self.body(), self.headers.get("content-type"), decoder)
        except BodyError as exc:
            extra = (
                [{"message": exc.message, "key": exc.key, "source": "body"}] if exc.key else None
            )
            raise HTTPException(status_code=exc.status, detail=exc.detail, extra=extra) from None


def _body_route(data_type: type) -> dict[str, Any]:
    """Handler kwargs of a route with a strictly decoded JSON body of ``data_type``."""
    return {
        "request_class": StrictJSONRequest,
        "opt": {BODY_DECODER: msgspec.json.Decoder(data_type, strict=True)},
    }


def _error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    descriptions = {
        401: "Missing or invalid X-API-Key (only when the service has a key)",
        413: "Request body larger than MAX_BODY_BYTES, or more transactions than MAX_BATCH",
        415: "Content-Type is not application/json (UTF-8)",
    }
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=descriptions[status], generate_examples=False
        )
        for status in statuses
    }


def response(transaction_id: str, scored: Scored, version: str) -> PredictResponse:
    """The response body of one scored transaction (``latency_ms`` set by the caller)."""
    return PredictResponse(
        transaction_id=transaction_id,
        risk_score=scored.risk_score,
        risk_level=scored.risk_level,  # type: ignore[arg-type]
        action=scored.action,  # type: ignore[arg-type]
        latency_ms=0.0,
        model_version=version,
        reasons=[Reason(feature=f, contribution=c) for f, c in scored.reasons],
        profile_source=scored.profile_source,  # type: ignore[arg-type]
        channel=scored.channel,  # type: ignore[arg-type]
        anomaly_reasons=[AnomalyReason(feature=f, deviation=d) for f, d in scored.anomaly_reasons],
    )


def _internal_error(request: Request, exc: Exception) -> Response:
    if request.scope.get(DISCONNECTED_KEY):
        # Litestar raises a 500 when the body stream ends early; the client is gone and
        # nothing is wrong with the server (the middleware records 499).
        log.info(
            "client disconnected before sending its body: %s %s", request.method, request.url.path
        )
    else:
        # Anything not caught as a client error is a bug: log it, never leak a traceback.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(
        content={"status_code": 500, "detail": "internal error"},
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


def _build_metrics(settings: ServingSettings, loaded: LoadedModel) -> ServingMetrics:
    reference = loaded.bundle.blend.reference_histogram
    kwargs: dict[str, Any] = {
        "psi_reference": reference,
        "psi_window": settings.psi_window,
        "psi_every": settings.psi_every,
    }
    if settings.metrics_mode == "emf":
        return EmfMetrics(namespace=settings.metrics_namespace, **kwargs)
    return ServingMetrics(**kwargs)


def create_app(settings: ServingSettings | None = None) -> Litestar:
    """Build the app; loads (or reuses) the process-wide model first.

    Args:
        settings: Serving settings; default ``ServingSettings.from_env()``.

    Raises:
        model_loader.ModelLoadError: No model configured, download failed, or the bundle
            failed verification (sha256, versions) or its self-test; given ``settings``.
        SystemExit: The same failures when the settings come from the environment (the
            ``uvicorn --factory`` / Lambda entry): one line on stderr, exit status 1, so an
            operator reads the cause instead of a traceback.
    """
    from_env = settings is None
    settings = settings or ServingSettings.from_env()
    if settings.max_batch > BATCH_LIMIT:
        raise ValueError(f"MAX_BATCH={settings.max_batch} exceeds the hard limit {BATCH_LIMIT}")
    prepare_numba_cache()  # seed the kernel cache before the model's self-test compiles
    try:
        loaded = model_loader.get_model(settings)
    except model_loader.ModelLoadError as exc:
        if not from_env:
            raise
        print(f"serving: ModelLoadError: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    scorer = loaded.scorer
    version = loaded.version
    metrics = _build_metrics(settings, loaded)
    metrics.set_model(
        name=loaded.name,
        version=version,
        sha256=loaded.bundle.sha256,
        load_seconds=loaded.load_seconds,
    )
    metrics.set_ready(True)
    thresholds = loaded.bundle.blend.thresholds
    assert thresholds is not None  # load_bundle guarantees it
    model_info = ModelInfo(
        name=loaded.name,
        version=version,
        alias=loaded.alias,
        run_id=loaded.run_id,
        trained_at=loaded.trained_at,
        source=loaded.source,
        bundle_sha256=loaded.bundle.sha256,
        schema_version=int(loaded.bundle.manifest.get("schema_version", 0)),
        feature_version=int(loaded.bundle.manifest.get("feature_version", 0)),
        metrics=loaded.bundle.metrics,
        thresholds=ThresholdsInfo(high=thresholds.high, medium=thresholds.medium),
        xgb_trees=scorer.models.xgb.num_trees,
        iforest_trees=scorer.models.forest.num_trees,
        features=list(scorer.models.feature_names),
    )
    max_batch = settings.max_batch
    observe = metrics.observe_prediction
    store = build_store(settings, scorer.models.profiles, loaded.bundle.sha256)
    live = LiveProfiles(
        store,
        scorer.models.profiles,
        retry_s=settings.store_retry_s,
        on_lookup=metrics.observe_profile,
    )
    debug_features = settings.debug_features
    remote_store = hasattr(store, "fold_async")

    @post(
        "/v1/predict",
        status_code=200,
        responses=_error_responses(401, 413, 415),
        **_body_route(PredictRequest),
        summary="Score one transaction",
        description="Risk score 0-100, level, action, model version and the top reason codes "
        "(features that pushed the XGBoost log-odds up).",
    )
    async def predict(data: PredictRequest, request: Request) -> PredictResponse:
        t0 = request.scope.get(T0_KEY) or time.perf_counter()
        if remote_store:
            # Await Redis without blocking the other requests; the row is encoded into its
            # own array (the scorer's buffers are only touched between awaits).
            prior = await live.prior_async(data, feats.raw_row(data))
            scored = scorer.score_one(data, prior=prior)
        else:
            scored = scorer.score_one(data, live)
        observe(scored.risk_level, scored.store_label, scored.risk_score)
        out = response(data.transaction_id, scored, version)
        out.latency_ms = (time.perf_counter() - t0) * 1000.0
        if debug_features:
            out.features = scorer.last_features()
        return out

    @post(
        "/v1/predict/batch",
        status_code=200,
        responses=_error_responses(401, 413, 415),
        **_body_route(BatchRequest),
        summary="Score a batch of transactions",
        description=f"Up to {max_batch} transactions per call, scored on the vectorized path.",
    )
    async def predict_batch(data: BatchRequest, request: Request) -> BatchResponse:
        t0 = request.scope.get(T0_KEY) or time.perf_counter()
        items = data.transactions
        if len(items) > max_batch:
            raise HTTPException(
                status_code=413,
                detail=f"transactions: {len(items)} in one call, the limit is {max_batch}",
            )
        # One store round trip for the whole batch (folded in order), awaited without
        # blocking the other requests.
        raw = scorer.raw_many(items)
        results = scorer.score_many(items, taken=(raw, *await live.prior_many_async(items, raw)))
        out = []
        for item, scored in zip(items, results, strict=True):
            observe(scored.risk_level, scored.store_label, scored.risk_score)
            out.append(response(item.transaction_id, scored, version))
        latency = (time.perf_counter() - t0) * 1000.0
        for p in out:
            p.latency_ms = latency
        return BatchResponse(
            predictions=out, count=len(out), latency_ms=latency, model_version=version
        )

    @get("/v1/model", summary="The model being served")
    async def model() -> ModelInfo:
        return model_info

    @get("/healthz", summary="Liveness")
    async def healthz() -> Status:
        return Status(status="ok")

    @get(
        "/readyz",
        summary="Readiness: model loaded and self-test scored",
        responses={
            503: ResponseSpec(
                data_container=Status, description="Self-test failed", generate_examples=False
            )
        },
    )
    async def readyz() -> Response[Status]:
        try:
            model_loader.self_test(scorer)
        except Exception as exc:  # report, do not crash the probe
            log.error("readiness self-test failed: %s", exc)
            metrics.set_ready(False)
            return Response(
                Status(status="not ready", model_version=version, detail=str(exc)), status_code=503
            )
        metrics.set_ready(True)
        return Response(Status(status="ready", model_version=version))

    @get("/metrics", summary="Prometheus metrics", media_type=CONTENT_TYPE, include_in_schema=True)
    async def prometheus_metrics() -> Response[bytes]:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app = Litestar(
        route_handlers=[predict, predict_batch, model, healthz, readyz, prometheus_metrics],
        middleware=[edge_middleware(settings, metrics)],
        on_shutdown=[store.close] if store is not None else [],
        exception_handlers={HTTP_500_INTERNAL_SERVER_ERROR: _internal_error},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="POS cashier-integrity risk scoring",
            version=API_VERSION,
            description="Scores POS transactions with the champion XGBoost + isolation-forest "
            "bundle. Send header X-API-Key when the service has a key configured.",
            path="/schema",
        )
        if settings.openapi
        else None,
        debug=False,
    )
    if settings.openapi:
        _msgspec_components(app.openapi_schema)
    app.state.loaded_model = loaded
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.profiles = live
    return app


def _encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def _msgspec_components(openapi: OpenAPI) -> None:
    """Replace Litestar's rendering of the ``serving.schemas`` Structs with msgspec's.

    Litestar's generator drops falsy constraints of optional fields (``minimum: 0`` on
    ``Amount | None``); msgspec renders exactly what its decoder enforces.
    """
    assert openapi.components is not None
    schemas = openapi.components.schemas
    for name, node in openapi_components().items():
        schemas[name] = _to_litestar(node)  # type: ignore[index]


def _to_litestar(node: dict[str, Any]) -> Schema | Reference:
    if "$ref" in node:
        return Reference(ref=node["$ref"])
    aliases = Schema.field_aliases()
    kwargs: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            value = {name: _to_litestar(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _to_litestar(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            value = [_to_litestar(sub) for sub in value]
        kwargs[aliases.get(key) or re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()] = value
    return Schema(**kwargs)
