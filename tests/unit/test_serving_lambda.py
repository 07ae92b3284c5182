"""The Mangum handler with real event shapes: API Gateway REST (v1) and HTTP API (v2), ALB,
Lambda Function URL; plus EMF metrics. AWS itself cannot run here: the events are the
documented payloads Lambda receives, fed to the real handler in-process."""

from __future__ import annotations

import base64
import importlib
import json
import os
import sys

import pytest
from mangum import Mangum

from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import BRIEF_REQUEST
from tools.demo import build_demo_bundle


class Context:
    function_name = "pos-risk"
    aws_request_id = "req-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:pos-risk"
    memory_limit_in_mb = 1024

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return build_demo_bundle(
        tmp_path_factory.mktemp("lambda") / "bundle", rows=3000, n_estimators=20, iforest_trees=20
    ).path


def rest_v1(path, body=None, *, method="POST", stage="prod", b64=False, headers=None):
    raw = json.dumps(body) if body is not None else None
    if raw is not None and b64:
        raw = base64.b64encode(raw.encode()).decode()
    hdrs = {
        "Content-Type": "application/json",
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        **(headers or {}),
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "stage": stage,
            "path": f"/{stage}{path}",
            "requestId": "r1",
            "identity": {"sourceIp": "192.0.2.1"},
        },
        "body": raw,
        "isBase64Encoded": b64,
    }


def http_v2(
    raw_path,
    body=None,
    *,
    method="POST",
    domain="abc123.execute-api.us-east-1.amazonaws.com",
    stage="$default",
    headers=None,
):
    hdrs = {"content-type": "application/json", "host": domain, **(headers or {})}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "pytest",
            },
            "requestId": "r2",
            "routeKey": "$default",
            "stage": stage,
            "time": "25/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1795000000000,
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def alb(path, body=None, *, method="POST", headers=None):
    hdrs = {"content-type": "application/json", "host": "pos-risk-alb.example", **(headers or {})}
    return {
        "requestContext": {
            "elb": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:"
                "123456789012:targetgroup/pos-risk/abc"
            }
        },
        "httpMethod": method,
        "path": path,
        "queryStringParameters": {},
        "headers": hdrs,
        "body": json.dumps(body) if body is not None else "",
        "isBase64Encoded": False,
    }


def _json(response):
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


@pytest.fixture(scope="module")
def handler(bundle_dir):
    return Mangum(create_app(ServingSettings(model_dir=str(bundle_dir))), lifespan="off")


@pytest.mark.parametrize("b64", [False, True])
def test_rest_api_v1_with_stage(handler, b64):
    response = handler(rest_v1("/v1/predict", BRIEF_REQUEST, b64=b64), Context())
    assert response["statusCode"] == 200
    body = _json(response)
    assert body["transaction_id"] == "T100" and 0 <= body["risk_score"] <= 100


def test_http_api_v2_and_function_url(handler):
    response = handler(http_v2("/v1/predict", BRIEF_REQUEST), Context())
    assert response["statusCode"] == 200 and _json(response)["risk_level"]
    url = http_v2(
        "/v1/predict/batch",
        {"transactions": [BRIEF_REQUEST, BRIEF_REQUEST]},
        domain="abcdefghij.lambda-url.us-east-1.on.aws",
    )
    response = handler(url, Context())
    assert response["statusCode"] == 200 and _json(response)["count"] == 2


def test_alb_event(handler):
    response = handler(alb("/v1/predict", BRIEF_REQUEST), Context())
    assert response["statusCode"] == 200 and _json(response)["action"]
    assert handler(alb("/healthz", method="GET"), Context())["statusCode"] == 200


def test_bad_input_through_lambda_is_400(handler):
    response = handler(rest_v1("/v1/predict", {**BRIEF_REQUEST, "item_count": -3}), Context())
    assert response["statusCode"] == 400 and "item_count" in response["body"]


def test_base_path_is_stripped(bundle_dir):
    app = create_app(ServingSettings(model_dir=str(bundle_dir)))
    handler = Mangum(app, lifespan="off", api_gateway_base_path="/risk")
    response = handler(http_v2("/risk/v1/predict", BRIEF_REQUEST, stage="risk"), Context())
    assert response["statusCode"] == 200 and _json(response)["transaction_id"] == "T100"
    assert handler(rest_v1("/risk/v1/model", method="GET"), Context())["statusCode"] == 200


def test_lambda_handler_module_loads_at_import_and_emits_emf(bundle_dir, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_DIR", str(bundle_dir))
    monkeypatch.setenv("METRICS_MODE", "emf")
    monkeypatch.setenv("API_KEY", "k")
    sys.modules.pop("serving.lambda_handler", None)
    # Creating the app applies Litestar's logging config, which binds a StreamHandler to
    # the current sys.stderr: outside capsys, so it never points at a stream that closes
    # with this test while Mangum's log listener thread may still write to it.
    with capsys.disabled():
        module = importlib.import_module("serving.lambda_handler")
    capsys.readouterr()
    denied = module.handler(rest_v1("/v1/predict", BRIEF_REQUEST), Context())
    assert denied["statusCode"] == 401
    response = module.handler(
        rest_v1("/v1/predict", BRIEF_REQUEST, headers={"X-API-Key": "k"}), Context()
    )
    assert response["statusCode"] == 200
    lines = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "_aws" in line
    ]
    names = {
        m["Name"] for line in lines for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {
        "pos_risk_requests_total",
        "pos_risk_request_duration_seconds",
        "pos_risk_predictions_total",
        "pos_risk_score",
    } <= names
    statuses = {line.get("status") for line in lines}
    assert {"401", "200"} <= statuses
    sys.modules.pop("serving.lambda_handler", None)


def test_image_dependencies_suffice(bundle_dir):
    """The serving image ships neither scikit-learn nor MLflow: the handler must not need them."""
    import subprocess

    code = (
        "import sys, json\n"
        "for m in ('sklearn', 'mlflow'): sys.modules[m] = None\n"
        "from serving.lambda_handler import handler\n"
        "from tests.conftest import BRIEF_REQUEST\n"
        "from tests.unit.test_serving_lambda import Context, http_v2\n"
        "r = handler(http_v2('/v1/predict', BRIEF_REQUEST), Context())\n"
        "print(r['statusCode'], json.loads(r['body'])['risk_level'])\n"
    )
    env = {**os.environ, "MODEL_DIR": str(bundle_dir), "METRICS_MODE": "prometheus"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(__import__("pathlib").Path(__file__).parents[2]),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "200"
