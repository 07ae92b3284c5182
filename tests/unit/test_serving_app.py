"""The Litestar app through its test client, on a real bundle built from generated data."""

from __future__ import annotations

import json
import math
import shutil

import hypothesis
import msgspec
import msgspec.inspect as mi
import numpy as np
import pytest
import schemathesis
import xgboost as xgb
from litestar.testing import TestClient

from components.contracts import blend as blend_mod
from components.contracts import features as feats
from components.contracts.forest import ForestArrays
from serving.app import create_app
from serving.model_loader import ModelLoadError, load
from serving.schemas import API_STRUCTS, ID_MAX_LENGTH, BatchRequest, PredictRequest
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
    with TestClient(create_app(ServingSettings(model_dir=str(demo.path)))) as c:
        yield c


def _known_request(demo, i: int = 0) -> dict:
    row = demo.transactions.slice(i, 1).to_pylist()[0]
    row.pop("is_fraud")
    row.pop("fraud_type")
    row["timestamp"] = row["timestamp"].isoformat()
    return row


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
    rows = [_known_request(demo, i) for i in range(0, 4000, 97)]
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
    # single == batch exactly, reasons included
    for one, many in zip(served, batch["predictions"], strict=True):
        assert one["risk_score"] == many["risk_score"]
        assert one["reasons"] == many["reasons"]


def test_fraud_scores_higher_than_normal(client, demo):
    labels = demo.transactions.column("is_fraud").to_pylist()
    fraud = [i for i, f in enumerate(labels) if f][:30]
    normal = [i for i, f in enumerate(labels) if not f][:30]
    body = {"transactions": [_known_request(demo, i) for i in fraud + normal]}
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


JSON = {"content-type": "application/json"}


def _with(raw_member: bytes) -> bytes:
    return json.dumps(BRIEF_REQUEST).encode()[:-1] + b", " + raw_member + b"}"


@pytest.mark.parametrize(
    ("path", "raw", "status", "names"),
    [
        # the 50,000-deep nested array: was a RecursionError -> 500
        ("/v1/predict", b"[" * 50_000 + b"]" * 50_000, 400, "body"),
        ("/v1/predict", _with(b'"x": ' + b"[" * 50_000 + b"]" * 50_000), 400, "nested too deeply"),
        ("/v1/predict/batch", b'{"transactions": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, ""),
        ("/v1/predict", _with(b'"item_count": 13'), 400, "duplicate key 'item_count'"),
        ("/v1/predict", _with(b'"total_amount": 1e400'), 400, "total_amount"),
        ("/v1/predict", _with(b'"item_count": ' + b"9" * 400), 400, "item_count"),
        ("/v1/predict", _with(b'"total_amount": Infinity'), 400, "malformed"),
        ("/v1/predict", _with(b'"note": "\xff"'), 400, "UTF-8"),
        (
            "/v1/predict",
            json.dumps({**BRIEF_REQUEST, "item_count": "12"}).encode(),
            400,
            "item_count",
        ),
        (
            "/v1/predict",
            json.dumps({**BRIEF_REQUEST, "post_payment_void": 0}).encode(),
            400,
            "post_payment_void",
        ),
        (
            "/v1/predict",
            json.dumps({**BRIEF_REQUEST, "refund_no_receipt": "true"}).encode(),
            400,
            "refund_no_receipt",
        ),
        ("/v1/predict", json.dumps({**BRIEF_REQUEST, "cashier_id": 1}).encode(), 400, "cashier_id"),
        (
            "/v1/predict",
            json.dumps({**BRIEF_REQUEST, "timestamp": 1700000000}).encode(),
            400,
            "timestamp",
        ),
    ],
)
def test_hostile_bodies_are_4xx_json_naming_the_problem(client, path, raw, status, names):
    resp = client.post(path, content=raw, headers=JSON)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status_code"] == status and names in body["detail"]


def test_field_errors_keep_the_key_in_extra(client):
    body = {"transactions": [BRIEF_REQUEST, {**BRIEF_REQUEST, "void_count": "1"}]}
    resp = client.post("/v1/predict/batch", json=body)
    assert resp.status_code == 400
    assert resp.json()["extra"] == [
        {
            "message": "Expected `float`, got `str`",
            "key": "transactions[1].void_count",
            "source": "body",
        }
    ]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_wrong_content_type_is_415(client, content_type):
    headers = {"content-type": content_type}
    raw = json.dumps(BRIEF_REQUEST).encode()
    for path, body in (
        ("/v1/predict", raw),
        ("/v1/predict/batch", b'{"transactions": [' + raw + b"]}"),
    ):
        resp = client.post(path, content=body, headers=headers)
        assert resp.status_code == 415 and resp.json()["status_code"] == 415, resp.text


def test_a_body_without_content_type_is_read_as_json(client):
    """POS clients and `curl -d` often send no Content-Type; the body is still strict JSON."""
    resp = client.post("/v1/predict", content=json.dumps(BRIEF_REQUEST).encode(), headers={})
    assert resp.status_code in (200, 201), resp.text
    bad = client.post("/v1/predict", content=b'{"transaction_id": 1}', headers={})
    assert bad.status_code == 400, bad.text


def test_unicode_ids_are_accepted_and_find_their_profile(client, demo):
    profiles = client.app.state.loaded_model.scorer.models.profiles
    assert UNICODE_CASHIER in profiles.cashiers
    known = {
        **BRIEF_REQUEST,
        "cashier_id": UNICODE_CASHIER,
        "transaction_id": "Tx-№1",
        "timestamp": "2026-01-10T03:00:00",
    }
    unknown = {**known, "cashier_id": "Zoë-收银员-99"}
    one = client.post("/v1/predict", json=known)
    assert one.status_code == 200, one.text
    assert one.json()["transaction_id"] == "Tx-№1"
    # The profile was found: same score as the training-side features with that prior.
    booster = xgb.Booster(model_file=str(demo.xgb_path))
    forest = ForestArrays.load(demo.path / "forest.npz")
    params = blend_mod.BlendParams.from_dict(json.loads((demo.path / "blend.json").read_text()))
    raw = feats.raw_row(msgspec.convert(known, PredictRequest))
    prior = profiles.prior_for(UNICODE_CASHIER, None)
    assert prior[: feats.STATS_WIDTH].any()  # the cashier's own statistics, not zeros
    X = feats.compute_features(raw, prior[None, :])
    margin = booster.predict(
        xgb.DMatrix(X, feature_names=list(feats.FEATURE_NAMES)), output_margin=True
    )
    expected = blend_mod.risk_score(margin, forest.score_samples(X), params)
    assert one.json()["risk_score"] == float(expected[0])
    assert client.post("/v1/predict", json=unknown).json()["risk_score"] != one.json()["risk_score"]
    # Batch and single agree, and the cashier's home store is found through the same id.
    batch = client.post("/v1/predict/batch", json={"transactions": [known]}).json()
    assert batch["predictions"][0]["risk_score"] == one.json()["risk_score"]
    assert profiles.store_for(UNICODE_CASHIER) is not None


@pytest.mark.parametrize("field", ["transaction_id", "cashier_id", "store_id", "lane_id"])
def test_empty_or_overlong_ids_are_400(client, field):
    for value in ("", "é" * (ID_MAX_LENGTH + 1)):
        resp = client.post("/v1/predict", json={**BRIEF_REQUEST, field: value})
        assert resp.status_code == 400 and resp.json()["extra"][0]["key"] == field
    longest = {**BRIEF_REQUEST, field: "é" * ID_MAX_LENGTH}
    assert client.post("/v1/predict", json=longest).status_code == 200


# ---------------------------------------------------------------- OpenAPI carries every constraint

_NUMBER = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
    "multiple_of": "multipleOf",
}
_STRING = {"min_length": "minLength", "max_length": "maxLength", "pattern": "pattern"}
_ARRAY = {"min_length": "minItems", "max_length": "maxItems"}


def _expected(t: mi.Type) -> dict:
    """The JSON Schema keywords one msgspec type must carry (its enforced constraints)."""
    while isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, (mi.IntType, mi.FloatType)):
        out = {"type": "integer" if isinstance(t, mi.IntType) else "number"}
        keywords = _NUMBER
    elif isinstance(t, mi.StrType):
        out, keywords = {"type": "string"}, _STRING
    elif isinstance(t, mi.ListType):
        out, keywords = {"type": "array", "items": _expected(t.item_type)}, _ARRAY
    elif isinstance(t, mi.LiteralType):
        return {"enum": sorted(t.values)}
    elif isinstance(t, mi.BoolType):
        return {"type": "boolean"}
    elif isinstance(t, mi.StructType):
        return {"$ref": f"#/components/schemas/{t.cls.__name__}"}
    elif isinstance(t, mi.DateTimeType):
        return {"type": "string", "format": "date-time"}
    elif isinstance(t, mi.UnionType):
        return {"anyOf": [_expected(u) for u in t.types]}
    else:
        return {}
    out.update(
        {kw: getattr(t, attr) for attr, kw in keywords.items() if getattr(t, attr) is not None}
    )
    return out


def _carries(served: dict, expected: dict, where: str) -> None:
    if "anyOf" in expected:
        options = served.get("anyOf") or served.get("oneOf")
        assert options and len(options) == len(expected["anyOf"]), (where, served)
        for option in expected["anyOf"]:
            assert any(_matches(s, option) for s in options), (where, option, served)
        return
    assert _matches(served, expected), (where, expected, served)


def _matches(served: dict, expected: dict) -> bool:
    for key, value in expected.items():
        if key == "items":
            if not _matches(served.get("items", {}), value):
                return False
        elif key == "enum":
            if sorted(served.get("enum", [])) != value:
                return False
        elif served.get(key) != value:
            return False
    return True


def test_openapi_schema_carries_every_enforced_constraint(client):
    """Walk each API Struct's msgspec constraints; each must appear in /schema/openapi.json."""
    served = client.get("/schema/openapi.json").json()
    components = served["components"]["schemas"]
    checked = 0
    for struct in API_STRUCTS:
        info = mi.type_info(struct)
        schema = components[struct.__name__]
        assert sorted(schema.get("required", [])) == sorted(
            f.encode_name for f in info.fields if f.required
        ), struct
        for field in info.fields:
            _carries(
                schema["properties"][field.encode_name],
                _expected(field.type),
                f"{struct.__name__}.{field.name}",
            )
            checked += 1
    assert checked > 40
    # The request bodies the validator decodes are the components checked above.
    for path, struct in (("/v1/predict", PredictRequest), ("/v1/predict/batch", BatchRequest)):
        body = served["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{struct.__name__}"}
        assert {"400", "413", "415"} <= set(served["paths"][path]["post"]["responses"])
    # The case the issue found: optional amounts lacked their lower bound.
    void_amount = components["PredictRequest"]["properties"]["void_amount"]
    assert {"type": "number", "minimum": 0.0, "maximum": 10_000_000.0} in [
        {k: v for k, v in o.items() if k in ("type", "minimum", "maximum")}
        for o in void_amount["anyOf"]
    ]
