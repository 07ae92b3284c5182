"""tools.bench: the serving benchmark's helpers and the baseline apps it serves with uvicorn."""

from __future__ import annotations

import pytest

from tools.bench.http import BODY, pct


@pytest.mark.parametrize(("q", "expected"), [(0, 1.0), (50, 6.0), (99, 10.0), (100, 10.0)])
def test_pct_picks_the_nearest_rank(q, expected):
    assert pct([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], q) == expected


def test_constant_app_answers_every_predict_with_the_same_body():
    from litestar.testing import TestClient

    from tools.bench.apps import constant

    with TestClient(app=constant.create_app()) as client:
        resp = client.post("/v1/predict", json=BODY)
    assert resp.status_code == 200
    assert resp.json() == constant.RESPONSE


def test_fastapi_baseline_scores_the_bench_body_on_a_real_bundle(tmp_path, monkeypatch):
    """The brief-style baseline loads a real bundle and returns the API's fields."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tools.bench.apps import fastapi_baseline
    from tools.demo import build_demo_bundle

    bundle = build_demo_bundle(tmp_path / "b", rows=1500, n_estimators=8, iforest_trees=10)
    monkeypatch.setenv("MODEL_DIR", str(bundle.path))
    monkeypatch.setenv("IFOREST_TREES", "10")
    with TestClient(fastapi_baseline.create_app()) as client:
        resp = client.post("/v1/predict", json=BODY)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["transaction_id"] == BODY["transaction_id"]
    assert 0.0 <= out["risk_score"] <= 100.0
    assert out["risk_level"] in ("Low Risk", "Medium Risk", "High Risk")
