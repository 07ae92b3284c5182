"""Constant-response Litestar route: the framework + server floor.

uvicorn --factory tools.bench.apps.constant:create_app
"""

from litestar import Litestar, post

RESPONSE = {
    "transaction_id": "T100",
    "risk_score": 12.5,
    "risk_level": "Low Risk",
    "action": "Log only",
    "latency_ms": 0.0,
}


@post("/v1/predict", status_code=200)
async def predict(data: dict) -> dict:
    return RESPONSE


def create_app() -> Litestar:
    """The app: one route answering every POST with ``RESPONSE``."""
    return Litestar([predict])
