"""GitHub Actions workflows: valid against the GitHub workflow JSON schema, and the deploy
workflow authenticates with OIDC and reads every secret from repository secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github/workflows"
CHECK = str(Path(sys.executable).parent / "check-jsonschema")


def _check(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHECK, "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_workflow_matches_github_schema(name):
    out = _check(WORKFLOWS / name)
    assert out.returncode == 0, out.stdout + out.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps: {run: 1}\n")
    assert _check(bad).returncode != 0


def test_ci_runs_every_check():
    ci = load("ci.yml")
    runs = "\n".join(s.get("run", "") for s in steps(ci))
    for needed in ("make lint", "bash .ci/run", "make compile-check", "hadolint", "cfn-lint",
                   "check-jsonschema --builtin-schema vendor.github-workflows", "shellcheck"):  # fmt: skip
        assert needed in runs, needed
    assert ci["permissions"] == {"contents": "read"}
    assert "secrets." not in (WORKFLOWS / "ci.yml").read_text()


def test_deploy_uses_oidc_and_repository_secrets_only():
    text = (WORKFLOWS / "deploy.yml").read_text()
    deploy = load("deploy.yml")
    assert deploy["permissions"]["id-token"] == "write"
    creds = [s for s in steps(deploy) if s.get("uses", "").startswith(
        "aws-actions/configure-aws-credentials@")]  # fmt: skip
    assert len(creds) == 1
    assert creds[0]["with"]["role-to-assume"] == "${{ secrets.AWS_DEPLOY_ROLE_ARN }}"
    assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    # every secret comes from the secrets context; no literal credentials or ARNs
    assert not re.search(r"arn:aws:iam::\d{12}", text)
    assert re.findall(r"secrets\.(\w+)", text)
    assert set(re.findall(r"secrets\.(\w+)", text)) <= {
        "AWS_DEPLOY_ROLE_ARN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"}  # fmt: skip


def test_deploy_bakes_builds_deploys_smokes_and_records_in_order():
    runs = [s.get("run", "") + s.get("uses", "") for s in steps(load("deploy.yml"))]

    def index(fragment: str) -> int:
        hits = [i for i, r in enumerate(runs) if fragment in r]
        assert hits, fragment
        return hits[0]

    order = [index("scripts/bake_bundle.py"), index("configure-aws-credentials"),
             index("scripts/build_images.py --only serving-lambda --push"),
             index("aws cloudformation deploy"), index("v1/predict"),
             index("scripts/record_deployment.py")]  # fmt: skip
    assert order == sorted(order)
    assert "ImageUri=${{ steps.image.outputs.uri }}" in runs[index("aws cloudformation deploy")]
    for script in ("scripts/build_images.py", "scripts/record_deployment.py"):
        assert (REPO / script).exists()
