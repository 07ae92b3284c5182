"""The Litestar app through its test client, on a real bundle built from generated data."""

from __future__ import annotations

import json
import math
import shutil

import hypothesis
import numpy as np
import pytest
import schemathesis
import serving_demo
import xgboost as xgb
from litestar.testing import TestClient
from serving_demo import BRIEF_REQUEST, known_request

from components.contracts import blend as blend_mod
from components.contracts import channels
from components.contracts import features as feats
from components.contracts.forest import ForestArrays
from serving.app import create_app
from serving.model_loader import ModelLoadError, load
from serving.settings import ServingSettings

demo = serving_demo.demo
client = serving_demo.client


def test_predict_returns_the_brief_response_plus_version_and_reasons(client):
    resp = client.post("/v1/predict", json=BRIEF_REQUEST)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["transaction_id"] == "T100"
    assert 0.0 <= body["risk_score"] <= 100.0
    assert body["risk_level"] in ("Low Risk", "Medium Risk", "High Risk")
    assert body["action"] in (
        "Log only",
        "Flag for post-shift audit",
        "Hold transaction: supervisor review",
    )
    assert body["latency_ms"] > 0
    assert body["model_version"] == "0"
    assert len(body["reasons"]) <= 3
    for reason in body["reasons"]:
        assert reason["feature"] in feats.FEATURE_NAMES and reason["contribution"] > 0


def test_scores_equal_training_side_models_and_blend(client, demo):
    """Served score == blend.risk_score(Booster margin, sklearn-equivalent forest score)."""
    rows = [known_request(demo, i) for i in range(0, 4000, 97)]
    booster = xgb.Booster(model_file=str(demo.xgb_path))
    forest = ForestArrays.load(demo.path / "forest.npz")
    params = blend_mod.BlendParams.from_dict(json.loads((demo.path / "blend.json").read_text()))
    profiles = feats.ProfileIndex.from_table(
        __import__("pyarrow.parquet", fromlist=["x"]).read_table(demo.path / "profiles.parquet")
    )
    raw = np.vstack([feats.raw_row(r) for r in rows])
    prior = np.vstack([profiles.prior_for(r["cashier_id"], r["store_id"]) for r in rows])
    X = feats.compute_features(raw, prior)
    margin = booster.predict(
        xgb.DMatrix(X, feature_names=list(feats.FEATURE_NAMES)), output_margin=True
    )
    expected = blend_mod.risk_score(margin, forest.score_samples(X), params)
    served = [client.post("/v1/predict", json=r).json() for r in rows]
    assert [s["risk_score"] for s in served] == list(expected)  # exact, not approximate
    levels = blend_mod.risk_levels(expected, params.thresholds)
    assert [s["risk_level"] for s in served] == list(levels)
    batch = client.post("/v1/predict/batch", json={"transactions": rows}).json()
    assert batch["count"] == len(rows)
    # single == batch exactly, reasons, channel and anomaly reasons included
    for one, many in zip(served, batch["predictions"], strict=True):
        assert one["risk_score"] == many["risk_score"]
        assert one["reasons"] == many["reasons"]
        assert one["channel"] == many["channel"]
        assert one["anomaly_reasons"] == many["anomaly_reasons"]
    # the channel that reached the level, from the same two channel scores
    sup, anom = blend_mod.channel_scores(margin, forest.score_samples(X), params)
    cuts = {"High Risk": params.thresholds.high, "Medium Risk": params.thresholds.medium}
    for s, level, sc, an in zip(served, levels, sup, anom, strict=True):
        expect = None if level == "Low Risk" else channels.fired(sc, an, cuts[level])
        assert s["channel"] == expect
        if expect not in ("anomaly", "both"):  # reasons only for a channel that fired
            assert s["anomaly_reasons"] == []
        devs = [r["deviation"] for r in s["anomaly_reasons"]]
        assert devs == sorted(devs, reverse=True) and all(d > 0 for d in devs)
        assert {r["feature"] for r in s["anomaly_reasons"]} <= set(feats.ANOMALY_FEATURES)
    assert {s["channel"] for s in served} >= {None, "supervised"}
    fired = [s for s in served if s["channel"] in ("anomaly", "both")]
    assert fired and all(s["anomaly_reasons"] for s in fired)


def test_fraud_scores_higher_than_normal(client, demo):
    labels = demo.transactions.column("is_fraud").to_pylist()
    fraud = [i for i, f in enumerate(labels) if f][:30]
    normal = [i for i, f in enumerate(labels) if not f][:30]
    body = {"transactions": [known_request(demo, i) for i in fraud + normal]}
    scores = [
        p["risk_score"] for p in client.post("/v1/predict/batch", json=body).json()["predictions"]
    ]
    assert np.mean(scores[:30]) > np.mean(scores[30:]) + 10


def test_optional_context_fields_change_the_score(client):
    base = client.post("/v1/predict", json=BRIEF_REQUEST).json()["risk_score"]
    context = {
        **BRIEF_REQUEST,
        "timestamp": "2026-01-10T03:00:00",
        "lane_type": "self_checkout",
        "refund_amount": 140.0,
        "refund_no_receipt": True,
        "payment_type": "cash",
        "void_count": 6,
        "void_amount": 90.0,
        "post_payment_void": True,
    }
    resp = client.post("/v1/predict", json=context)
    assert resp.status_code == 200
    assert resp.json()["risk_score"] != base


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"item_count": -1}, "item_count"),
        ({"void_count": "three"}, "void_count"),
        ({"total_amount": 1e300}, "total_amount"),
        ({"lane_type": "drive_through"}, "lane_type"),
        ({"payment_type": "bitcoin"}, "payment_type"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"weight_variance": None}, "weight_variance"),
    ],
)
def test_bad_fields_are_400_naming_the_field(client, change, field):
    resp = client.post("/v1/predict", json={**BRIEF_REQUEST, **change})
    assert resp.status_code == 400, resp.text
    assert field in resp.text


@pytest.mark.parametrize("missing", ["cashier_id", "item_count", "weight_variance"])
def test_missing_required_field_is_400(client, missing):
    body = {k: v for k, v in BRIEF_REQUEST.items() if k != missing}
    resp = client.post("/v1/predict", json=body)
    assert resp.status_code == 400 and missing in resp.text


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"item_count": NaN}', b"[]", b"", b'{"total_amount": Infinity}']
)
def test_malformed_bodies_are_4xx_json(client, raw):
    resp = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500
    assert resp.headers["content-type"].startswith("application/json")


def test_batch_limits(client):
    assert client.post("/v1/predict/batch", json={"transactions": []}).status_code == 400
    over = {"transactions": [BRIEF_REQUEST] * 1001}
    assert client.post("/v1/predict/batch", json=over).status_code == 400


def test_model_info_health_ready_metrics(client, demo):
    info = client.get("/v1/model").json()
    manifest_sha = __import__("hashlib").sha256((demo.path / "manifest.json").read_bytes())
    assert info["bundle_sha256"] == manifest_sha.hexdigest()
    assert info["name"] == "cashier-integrity-risk-demo" and info["version"] == "0"
    assert set(info["thresholds"]) == {"high", "medium"}
    assert info["xgb_trees"] == 40 and info["iforest_trees"] == 30
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.post("/v1/predict", json=BRIEF_REQUEST)
    text = client.get("/metrics").text
    for name in (
        "pos_risk_requests_total",
        "pos_risk_request_duration_seconds_bucket",
        "pos_risk_predictions_total",
        "pos_risk_score_bucket",
        "pos_risk_model_info",
        "pos_risk_model_ready 1.0",
        "pos_risk_model_load_seconds",
        "pos_risk_score_psi",
    ):
        assert name in text, name
    assert 'route="/v1/predict",status="200"' in text
    assert 'le="0.00025"' in text and 'le="95.0"' in text
    assert client.get("/schema/openapi.json").json()["paths"]["/v1/predict"]["post"]


def test_api_key(demo):
    settings = ServingSettings(
        model_dir=str(demo.path), api_key="s3cret", metrics_require_key=False
    )
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/predict", json=BRIEF_REQUEST).status_code == 401
        bad = c.post("/v1/predict", json=BRIEF_REQUEST, headers={"X-API-Key": "nope"})
        assert bad.status_code == 401 and "X-API-Key" in bad.json()["detail"]
        ok = c.post("/v1/predict", json=BRIEF_REQUEST, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/model").status_code == 401
    locked = ServingSettings(model_dir=str(demo.path), api_key="s3cret", metrics_require_key=True)
    with TestClient(create_app(locked)) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_body_size_limit(demo):
    settings = ServingSettings(model_dir=str(demo.path), max_body_bytes=2000)
    with TestClient(create_app(settings)) as c:
        big = {"transactions": [BRIEF_REQUEST] * 40}
        assert c.post("/v1/predict/batch", json=big).status_code == 413
        assert c.post("/v1/predict", json=BRIEF_REQUEST).status_code == 200


def test_lower_max_batch_setting(demo):
    with TestClient(create_app(ServingSettings(model_dir=str(demo.path), max_batch=2))) as c:
        resp = c.post("/v1/predict/batch", json={"transactions": [BRIEF_REQUEST] * 3})
        assert resp.status_code == 413 and "transactions" in resp.text


def test_tampered_or_incompatible_bundle_is_refused(demo, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(demo.path, tampered)
    blend = json.loads((tampered / "blend.json").read_text())
    blend["intercept"] += 1.0
    (tampered / "blend.json").write_text(json.dumps(blend))
    with pytest.raises(ModelLoadError, match=r"blend\.json.*sha256"):
        load(ServingSettings(model_dir=str(tampered)))
    future = tmp_path / "future"
    shutil.copytree(demo.path, future)
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["schema_version"] = 999
    (future / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="schema_version"):
        load(ServingSettings(model_dir=str(future)))
    with pytest.raises(ModelLoadError, match="MODEL_DIR"):
        load(ServingSettings())


def test_psi_reacts_to_a_shifted_score_mix(demo):
    settings = ServingSettings(model_dir=str(demo.path), psi_every=1, psi_window=50)
    app = create_app(settings)
    with TestClient(app) as c:
        risky = {
            **BRIEF_REQUEST,
            "void_count": 9,
            "void_amount": 140.0,
            "no_sale_count": 6,
            "refund_amount": 150.0,
            "refund_no_receipt": True,
            "post_payment_void": True,
            "timestamp": "2026-01-10T03:00:00",
        }
        c.post("/v1/predict/batch", json={"transactions": [risky] * 50})
        psi = app.state.metrics.window.psi()
        assert psi is not None and psi > 0.25 and math.isfinite(psi)
        assert f"pos_risk_score_psi {psi}" in c.get("/metrics").text


def test_schemathesis_finds_no_server_error(demo):
    """Requests generated from the app's own OpenAPI schema, valid and invalid: never a 5xx."""
    from hypothesis import strategies as st

    app = create_app(ServingSettings(model_dir=str(demo.path)))
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/predict/batch", "/v1/model"}
    strategy = st.one_of(
        [
            op.as_strategy(generation_mode=mode)
            for op in operations
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        ]
    )
    seen = []

    @hypothesis.settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case):
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)

    run()
    assert any(code == 200 for code in seen) and any(400 <= code < 500 for code in seen)


def test_a_one_blend_bundle_still_serves_without_channel_fields(demo):
    """blend.json version 1 (one logistic blend, before channels) scores as it did: no
    channel is named and there are no anomaly reason codes."""
    import dataclasses

    from components.contracts import bundle as B
    from serving.model_loader import load_models
    from serving.scorer import Scorer

    models = load_models(B.load_bundle(demo.path))
    v1 = blend_mod.BlendParams(
        xgb_weight=1.0, iforest_weight=0.5, intercept=-3.0, iforest_center=0.45,
        iforest_scale=0.05, thresholds=blend_mod.Thresholds(high=60.0, medium=5.0),
    )  # fmt: skip
    v1 = blend_mod.BlendParams.from_dict(v1.to_dict())
    scorer = Scorer(dataclasses.replace(models, blend=v1))
    rows = [known_request(demo, i) for i in range(0, 600, 7)]
    many = scorer.score_many(rows)
    for row, m in zip(rows, many, strict=True):
        one = scorer.score_one(row)
        assert one.risk_score == m.risk_score
        assert one.channel is None and m.channel is None
        assert one.anomaly_reasons == [] and m.anomaly_reasons == []
    assert {m.risk_level for m in many} != {"Low Risk"}
