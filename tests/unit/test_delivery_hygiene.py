"""Delivery files hold no secret, AWS account id or machine-specific path: everything
environment-specific is a parameter, a repository secret/variable or a placeholder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = [
    # image requirements .txt files are sha256 lists checked against the lock instead
    ".dockerignore", "serving/Dockerfile", "serving/requirements.in",
    "components/deps.Dockerfile", "components/requirements.in", "scripts/base_image.sh",
    ".github/workflows/ci.yml", ".github/workflows/deploy.yml", ".ci/run",
    "scripts/build_images.py", "scripts/record_deployment.py", "pipelines/images.py",
    "pipelines/dockerfile.py", "tools/delivery/images.py", "tools/delivery/record.py",
    "tools/delivery/bake.py",
    "scripts/setup_mlflow.sh", "scripts/setup_aws_infra.sh", "scripts/make/delivery.mk",
    "components/stage.Dockerfile",
    *(str(p.relative_to(REPO)) for p in sorted((REPO / "manifests").rglob("*")) if p.is_file()),
]  # fmt: skip

FORBIDDEN = {
    "AWS account id": re.compile(r"(?<![\d.])\d{12}(?![\d.])"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "inline secret": re.compile(r"(?i)(secret|password|token)\s*[:=]\s*['\"][^'\"$<{]{8,}['\"]"),
    "machine path": re.compile(r"(/work/|/home/\w|/Users/\w|C:\\\\Users)"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


@pytest.mark.parametrize("rel", FILES)
def test_no_secret_account_or_machine_path(rel):
    path = REPO / rel
    if not path.exists():
        pytest.skip(f"{rel} not present")
    text = path.read_text()
    for what, pattern in FORBIDDEN.items():
        hit = pattern.search(text)
        assert hit is None, f"{rel}: {what} {hit.group(0)!r}"


def test_the_checks_catch_what_they_claim():
    assert FORBIDDEN["AWS account id"].search("arn:aws:iam::123456789012:role/x")
    assert not FORBIDDEN["AWS account id"].search("sha256 1234567890123456")
    assert FORBIDDEN["AWS access key id"].search("AKIAABCDEFGHIJKLMNOP")
    assert FORBIDDEN["machine path"].search("sqlite:////work/main/var/mlflow.db")
