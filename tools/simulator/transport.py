"""Transports for the simulator: HTTP (urllib) and the in-process AWS Lambda handler."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from tools.simulator.logic import PREDICT_PATH, SimulatorError, api_gateway_v2_event

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- transports


class Transport(Protocol):
    """Sends one request body and returns (HTTP status, parsed JSON body or None)."""

    name: str

    def send(self, body: bytes) -> tuple[int, Any]: ...

    def close(self) -> None: ...


class HttpTransport:
    """``POST <base_url>/v1/predict`` with httpx (one pooled client shared by all threads)."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float, concurrency: int):
        import httpx

        self.name = base_url.rstrip("/") + PREDICT_PATH
        headers = {"content-type": "application/json", "user-agent": "pos-traffic-simulator"}
        if api_key:
            headers["x-api-key"] = api_key
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.connection_errors: tuple[type[BaseException], ...] = (httpx.TransportError,)

    def send(self, body: bytes) -> tuple[int, Any]:
        resp = self._client.post(PREDICT_PATH, content=body)
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        return resp.status_code, payload

    def close(self) -> None:
        self._client.close()


class _LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers read."""

    function_name = "pos-risk-simulator"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:pos-risk-simulator"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/pos-risk-simulator"
    log_stream_name = "simulator"

    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def _ensure_event_loop() -> None:
    """Give a worker thread its own event loop: Mangum runs the ASGI app on the current one."""
    import asyncio

    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


class LambdaTransport:
    """Calls a Lambda handler in-process with API Gateway v2 events.

    One event at a time, as one Lambda execution environment processes one invocation at a
    time; concurrency > 1 only queues on the lock.
    """

    def __init__(
        self, handler: Callable[[dict, Any], dict], *, api_key: str | None, name: str = "handler"
    ):
        self.name = f"lambda:{name}"
        self._handler = handler
        self._headers = {"x-api-key": api_key} if api_key else {}
        self._lock = threading.Lock()
        self.connection_errors: tuple[type[BaseException], ...] = ()

    def send(self, body: bytes) -> tuple[int, Any]:
        event = api_gateway_v2_event(body, headers=self._headers)
        _ensure_event_loop()
        with self._lock:
            try:
                response = self._handler(event, _LambdaContext())
            except Exception as exc:
                # What API Gateway answers when the function raises.
                log.debug("lambda handler raised", exc_info=True)
                return 500, {"message": "Internal Server Error", "error": repr(exc)}
        raw = response.get("body") or ""
        if response.get("isBase64Encoded"):
            import base64

            raw = base64.b64decode(raw).decode()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return int(response["statusCode"]), payload

    def close(self) -> None:
        pass


def load_lambda_handler(spec: str = "serving.lambda_handler.handler") -> Callable:
    """Import ``module.attr`` (the Lambda CMD string) and return the handler."""
    import importlib

    module_name, _, attr = spec.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SimulatorError(f"lambda handler {spec!r} cannot be imported: {exc}") from exc
