"""The serving tests' demo bundle and app client (pytest fixtures), and request helpers."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from components.contracts.schemas import RAW_TRANSACTION
from serving.app import create_app
from serving.settings import ServingSettings
from tools.demo import build_demo_bundle

BRIEF_REQUEST = {
    "transaction_id": "T100",
    "cashier_id": "C001",
    "item_count": 12,
    "total_amount": 150.00,
    "void_count": 0,
    "no_sale_count": 0,
    "weight_variance": 0.1,
}


UNICODE_CASHIER = "Zoë-收银员-07"
"""A generated cashier renamed to non-ASCII text before its profile is built."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo_bundle(
        tmp_path_factory.mktemp("bundle") / "bundle",
        rows=4000,
        n_estimators=40,
        iforest_trees=30,
        rename_cashiers={"C0002": UNICODE_CASHIER},
    )


@pytest.fixture(scope="module")
def client(demo):
    """The app with the bundle's frozen profiles: each request is scored independently of the
    ones before it (the live store has its own tests: ``test_serving_store.py``)."""
    settings = ServingSettings(model_dir=str(demo.path), profile_store="frozen")
    with TestClient(create_app(settings)) as c:
        yield c


def known_request(demo, i: int = 0) -> dict:
    row = demo.transactions.slice(i, 1).select(RAW_TRANSACTION.names).to_pylist()[0]
    row["timestamp"] = row["timestamp"].isoformat()
    return row
