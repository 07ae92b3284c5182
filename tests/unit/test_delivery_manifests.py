"""Deployment manifests: SAM template (cfn-lint), ECS task definition (botocore's API model),
Kubernetes objects and the KFP launcher ConfigMap (parsed, required fields cross-checked).

No AWS account or Kubernetes cluster is used: cfn-lint and botocore's request validator are
the offline stand-ins for CloudFormation and the ECS API.
"""

from __future__ import annotations

import copy
import json
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub, ...) as data."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"!{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def template() -> dict:
    return yaml.load((MANIFESTS / "lambda/template.yaml").read_text(), Loader=_CfnLoader)


def _cfn_lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CFN_LINT, str(path)], capture_output=True, text=True, timeout=120)


def test_cfn_lint_passes():
    out = _cfn_lint(MANIFESTS / "lambda/template.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path):
    broken = (
        (MANIFESTS / "lambda/template.yaml")
        .read_text()
        .replace("PackageType: Image", "PackageType: Imag")
    )
    path = tmp_path / "template.yaml"
    path.write_text(broken)
    assert _cfn_lint(path).returncode != 0


def test_lambda_function_shape():
    t = template()
    fn = t["Resources"]["RiskFunction"]
    assert fn["Type"] == "AWS::Serverless::Function"
    props = fn["Properties"]
    assert props["PackageType"] == "Image"
    assert props["ImageUri"] == {"!Ref": "ImageUri"}
    assert props["MemorySize"] == {"!Ref": "MemorySize"} and props["Timeout"] == {"!Ref": "Timeout"}
    params = t["Parameters"]
    assert params["MemorySize"]["Default"] == 2048 and params["Timeout"]["Default"] == 10
    assert params["ProvisionedConcurrency"]["Default"] == 0  # optional, off by default
    assert params["ApiKey"].get("NoEcho") is True
    event = props["Events"]["Api"]
    assert event["Type"] == "HttpApi" and event["Properties"]["Path"] == "/{proxy+}"
    assert "ApiUrl" in t["Outputs"]
    pattern = re.compile(params["ImageUri"]["AllowedPattern"])
    good = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ci/serving-lambda@sha256:" + "a" * 64
    assert pattern.fullmatch(good)
    assert not pattern.fullmatch("ghcr.io/ci/serving-lambda:latest")


ECS_VARS = {
    "IMAGE_URI": "registry.example/ci/serving:abc1234-0123456789ab",
    "EXECUTION_ROLE_ARN": "arn:aws:iam::000000000000:role/ecsTaskExecutionRole",
    "LOG_GROUP": "/ecs/cashier-integrity-serving",
    "AWS_REGION": "eu-west-1",
}


def test_ecs_task_definition_is_a_valid_register_request():
    import botocore.session
    from botocore.validate import ParamValidator

    raw = (MANIFESTS / "ecs/task-definition.json").read_text()
    placeholders = {m.group(1) for m in re.finditer(r"\$\{(\w+)\}", raw)}
    assert placeholders == set(ECS_VARS), (
        "every placeholder is documented in manifests/ecs/README.md"
    )
    readme = (MANIFESTS / "ecs/README.md").read_text()
    assert all(f"`{name}`" in readme for name in placeholders)
    params = json.loads(string.Template(raw).substitute(ECS_VARS))
    shape = (
        botocore.session.get_session()
        .get_service_model("ecs")
        .operation_model("RegisterTaskDefinition")
        .input_shape
    )
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()

    broken = copy.deepcopy(params)
    broken["containerDefinitions"][0]["portMappings"][0]["containerPort"] = "8000"
    assert ParamValidator().validate(broken, shape).has_errors()

    (container,) = params["containerDefinitions"]
    assert container["portMappings"][0]["containerPort"] == 8000
    assert "/healthz" in " ".join(container["healthCheck"]["command"])
    assert container["user"].split(":")[0] not in ("root", "0")
    # Fargate only accepts certain cpu/memory pairs; 1 vCPU takes 2-8 GiB.
    assert params["cpu"] == "1024" and 2048 <= int(params["memory"]) <= 8192


def k8s_docs() -> dict[str, dict]:
    docs = {}
    for path in sorted((MANIFESTS / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_k8s_objects_fit_together():
    docs = k8s_docs()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ServiceMonitor",
            "Kustomization"} <= set(docs)  # fmt: skip
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "ServiceMonitor"):
        assert docs[kind]["metadata"]["name"] == "cashier-integrity-serving", kind
    dep = docs["Deployment"]
    assert dep["apiVersion"] == "apps/v1"
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    port = container["ports"][0]
    assert port["containerPort"] == 8000 and port["name"] == "http"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"], "HPA on CPU needs a CPU request"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8000"
    assert ann["prometheus.io/path"] == "/metrics"
    svc_port = docs["Service"]["spec"]["ports"][0]
    assert svc_port["targetPort"] == "http" and svc_port["name"] == "http"
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": dep["metadata"]["name"]}  # fmt: skip
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    sm = docs["ServiceMonitor"]
    assert (
        sm["spec"]["selector"]["matchLabels"].items()
        <= docs["Service"]["metadata"]["labels"].items()
    )
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    kust = docs["Kustomization"]
    assert container["image"] == kust["images"][0]["name"]
    listed = set(kust["resources"])
    assert listed == {p.name for p in (MANIFESTS / "k8s").glob("*.yaml")} - {"kustomization.yaml"}


def test_kfp_launcher_configmap_points_at_s3():
    cm = yaml.safe_load((MANIFESTS / "kfp/kfp-launcher-configmap.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "kfp-launcher"
    assert re.fullmatch(r"s3://[a-z0-9.-]+/.+", cm["data"]["defaultPipelineRoot"])
    providers = yaml.safe_load(cm["data"]["providers"])
    default = providers["s3"]["default"]
    assert default["endpoint"] and default["region"]
    assert isinstance(default["disableSSL"], bool)
    creds = default["credentials"]
    assert creds["fromEnv"] is True or {"secretName", "accessKeyKey", "secretKeyKey"} <= set(
        creds["secretRef"]
    )


@pytest.mark.parametrize("path", sorted(MANIFESTS.rglob("*.y*ml")), ids=lambda p: p.name)
def test_every_yaml_manifest_parses(path):
    loader = _CfnLoader if path.parent.name == "lambda" else yaml.SafeLoader
    docs = [d for d in yaml.load_all(path.read_text(), Loader=loader) if d is not None]
    assert docs, f"{path} is empty"
