"""The app's input contract: hostile bodies, content types, ids, and an OpenAPI schema that
carries every constraint the app enforces."""

from __future__ import annotations

import json

import msgspec
import msgspec.inspect as mi
import pytest
import serving_demo
import xgboost as xgb
from serving_demo import BRIEF_REQUEST, UNICODE_CASHIER

from components.contracts import blend as blend_mod
from components.contracts import features as feats
from components.contracts.forest import ForestArrays
from serving.schemas import API_STRUCTS, ID_MAX_LENGTH, BatchRequest, PredictRequest

JSON = {"content-type": "application/json"}

demo = serving_demo.demo
client = serving_demo.client


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
