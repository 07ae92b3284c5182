"""Infrastructure scripts: --dry-run prints the commands (no root, no AWS, no network),
bad arguments exit non-zero with one line, and shellcheck is clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [REPO / "scripts/setup_mlflow.sh", REPO / "scripts/setup_aws_infra.sh"]


def sh(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # An empty PATH for aws: dry runs must not need (or call) the AWS CLI.
    return subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip


def commands(out: str) -> list[str]:
    return [ln[2:] for ln in out.splitlines() if ln.startswith("+ ")]


def test_setup_mlflow_dry_run():
    out = sh("setup_mlflow.sh", "--dry-run", "--port", "5050", "s3://example-bucket/mlflow")
    assert out.returncode == 0, out.stderr
    cmds = commands(out.stdout)
    assert any("mlflow==3.17.2" in c for c in cmds)
    assert any(c.startswith("id -u mlflow || useradd") for c in cmds), "user creation is guarded"
    assert "--artifacts-destination s3://example-bucket/mlflow" in out.stdout
    assert "--port 5050" in out.stdout
    assert cmds[-1] == "systemctl restart mlflow.service"


def test_setup_mlflow_pins_the_project_mlflow():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("mlflow==")]
    assert f'MLFLOW_VERSION="{pin.removeprefix("mlflow==")}"' in (
        REPO / "scripts/setup_mlflow.sh").read_text()  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "ARTIFACT_ROOT is required"), (("relative/path",), "ARTIFACT_ROOT must be"),
     (("--port", "x", "s3://b/p"), "--port must be a number"), (("--nope",), "unknown option")],
)  # fmt: skip
def test_setup_mlflow_bad_args(args, message):
    out = sh("setup_mlflow.sh", "--dry-run", *args)
    assert out.returncode == 2
    assert out.stderr.strip().startswith(f"error: {message}") and len(out.stderr.splitlines()) == 1


def test_setup_aws_infra_dry_run_calls_nothing(tmp_path):
    # PATH without the aws CLI: a dry run must not call it.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = sh("setup_aws_infra.sh", "--dry-run", "--github-repo", "acme/pos-risk", "--region",
             "eu-west-1", "--bucket", "acme-pos-artifacts", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    cmds = commands(out.stdout)
    assert any(c.startswith("aws s3api head-bucket --bucket acme-pos-artifacts ||") and
               "LocationConstraint=eu-west-1" in c for c in cmds)  # fmt: skip
    repos = [c for c in cmds if c.startswith("aws ecr describe-repositories")]
    assert len(repos) == 9 and all("--image-tag-mutability IMMUTABLE" in c for c in repos)
    assert any("create-open-id-connect-provider" in c for c in cmds)
    assert '"repo:acme/pos-risk:ref:refs/heads/main"' in out.stdout
    assert '"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"' in out.stdout
    assert any(c.startswith("aws iam put-role-policy") for c in cmds)


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "--github-repo must be OWNER/REPO"),
     (("--github-repo", "acme/x", "--bucket", "Bad_Bucket"), "invalid S3 bucket name"),
     (("--github-repo", "acme/x", "--region", "mars"), "invalid AWS region")],
)  # fmt: skip
def test_setup_aws_infra_bad_args(args, message):
    out = sh("setup_aws_infra.sh", "--dry-run", *args)
    assert out.returncode == 2
    assert out.stderr.strip().startswith(f"error: {message}") and len(out.stderr.splitlines()) == 1


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (apt-get install shellcheck)")  # fmt: skip
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(path):
    out = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
