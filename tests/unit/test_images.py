"""pipelines/{dockerfile,images}.py and their CLI tools.delivery.images: Dockerfile parsing,
content tags, plan.

Engine-free: the build/push calls are checked against a mocked Docker client
(``unittest.mock``); real builds and runs are in tests/containers/ (they need an engine).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

from pipelines import dockerfile, images

REPO = Path(__file__).resolve().parents[2]

MULTI = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.11-slim
FROM ${BASE} AS deps
COPY req.txt /tmp/req.txt
RUN pip install \\
    -r /tmp/req.txt
FROM ${BASE} AS server
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY ["app/", "app/"]
USER 10001
CMD ["uvicorn", "app:main"]
FROM other AS lambda
COPY lam/ /var/task/
CMD ["handler.run"]
"""


def test_parse_joins_continuations_and_drops_comments():
    ins = dockerfile.parse_dockerfile(MULTI)
    assert [i.keyword for i in ins][:5] == ["ARG", "FROM", "COPY", "RUN", "FROM"]
    run = ins[3]
    assert run.args == "pip install -r /tmp/req.txt" and run.line == 5


def test_stages_and_target_chain():
    stages = dockerfile.dockerfile_stages(MULTI)
    assert [s.name for s in stages] == ["deps", "server", "lambda"]
    assert stages[1].user == "10001" and stages[1].cmd == ("uvicorn", "app:main")
    assert stages[1].workdir == "/app" and stages[1].copies[1].workdir == "/app"
    assert dockerfile.copy_sources(MULTI, "server") == ["req.txt", "app/"]
    assert dockerfile.copy_sources(MULTI) == ["lam/"]  # default target = last stage, no deps
    with pytest.raises(images.BuildError, match="'nope' not in Dockerfile"):
        dockerfile.copy_sources(MULTI, "nope")


def test_ref_needs_a_registry():
    assert images.image_ref("reg.example/ns/", "train-xgb", "t") == "reg.example/ns/train-xgb:t"
    with pytest.raises(images.BuildError, match="IMAGE_REGISTRY is empty"):
        images.image_ref(" ", "x", "t")


def test_image_list_builds_bases_first():
    specs = images.image_specs()
    names = [s.name for s in specs]
    assert names == ["stage-deps", "datagen", "split", "features", "train-xgb", "train-iforest",
                     "evaluate", "register", "serving", "serving-lambda"]  # fmt: skip
    assert all(s.deps == "stage-deps" for s in specs if s.name in images.STAGE_IMAGES)
    assert [s.name for s in specs if not s.local] == ["serving-lambda"]


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    """A copy of the repo's image sources (Dockerfiles, requirements, code) plus junk."""
    for rel in ("components", "serving"):
        for src in (REPO / rel).rglob("*"):
            if src.is_file() and "__pycache__" not in src.parts and "model" not in src.parts:
                out = tmp_path / src.relative_to(REPO)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(src.read_bytes())
    (tmp_path / "components/contracts/__pycache__").mkdir()
    (tmp_path / "components/contracts/__pycache__/f-1.py311.nbi").write_bytes(b"\0")  # numba
    (tmp_path / "README.md").write_text("unrelated\n")
    (tmp_path / ".dockerignore").write_text((REPO / ".dockerignore").read_text())
    return tmp_path


def _plan(repo, only=None, **kw):
    return {p.spec.name: p for p in images.plan_images(repo, "reg.example/ci", only, **kw)}


def test_plan_files_are_exactly_what_the_image_copies(tiny_repo):
    plan = _plan(tiny_repo, ["datagen"])
    assert list(plan) == ["stage-deps", "datagen"]  # the base it is built FROM comes along
    datagen = plan["datagen"]
    assert datagen.files[0] == "components/stage.Dockerfile"
    assert {f.split("/")[1] for f in datagen.files[1:]} == {"datagen"}
    assert "components/datagen/component.yaml" not in datagen.files  # it names the tag
    assert "components/datagen/component.py" not in datagen.files
    deps = plan["stage-deps"]
    assert "components/requirements.txt" in deps.files
    assert "components/contracts/schemas.py" in deps.files
    assert not any("__pycache__" in f for f in deps.files)
    assert datagen.buildargs == {"DEPS_IMAGE": deps.ref, "STAGE": "datagen"}
    assert deps.buildargs == {"PYTHON_BASE": images.PYTHON_BASE}
    assert re.fullmatch(r"reg\.example/ci/datagen:[0-9a-f]{16}", datagen.ref)


def test_tags_change_exactly_when_the_image_content_changes(tiny_repo):
    before = _plan(tiny_repo)
    (tiny_repo / "README.md").write_text("changed, not in any image\n")
    (tiny_repo / "components/datagen/component.yaml").write_text("image: changed\n")
    assert {n: p.ref for n, p in _plan(tiny_repo).items()} == {n: p.ref for n, p in before.items()}

    (tiny_repo / "components/datagen/logic.py").write_text("X = 2\n")
    after = _plan(tiny_repo)
    changed = {n for n in before if before[n].ref != after[n].ref}
    assert changed == {"datagen"}

    # the shared stage Dockerfile is part of every stage's tag, and only theirs
    with open(tiny_repo / "components/stage.Dockerfile", "a") as f:
        f.write("# touched\n")
    shared = _plan(tiny_repo)
    assert {n for n in before if after[n].ref != shared[n].ref} == set(images.STAGE_IMAGES)
    (tiny_repo / "components/stage.Dockerfile").write_text(
        (REPO / "components/stage.Dockerfile").read_text()
    )

    # the dependency base is part of every stage's tag
    with open(tiny_repo / "components/requirements.txt", "a") as f:
        f.write("# touched\n")
    deps_changed = _plan(tiny_repo)
    changed = {n for n in before if after[n].ref != deps_changed[n].ref}
    assert changed == {"stage-deps", *images.STAGE_IMAGES}

    other_base = _plan(tiny_repo, python_base="example/python:3.11")
    assert other_base["split"].ref != deps_changed["split"].ref


def test_plan_reports_missing_bundle_and_unknown_names(tiny_repo):
    plan = _plan(tiny_repo, ["serving"])
    assert plan["serving"].missing == ("serving/model/",)
    with pytest.raises(images.BuildError, match="unknown image"):
        _plan(tiny_repo, ["nope"])


def test_image_refs_name_only_the_stage_images():
    refs = images.image_refs("reg.example/x")
    assert list(refs) == list(images.STAGE_IMAGES)
    assert all(re.fullmatch(rf"reg\.example/x/{n}:[0-9a-f]{{16}}", r) for n, r in refs.items())


def test_compiled_yaml_names_exactly_the_images_make_images_builds():
    """Every image in the checked-in pipeline YAML (and each component.yaml) is the content
    reference pipelines.images derives from this source, never :latest."""
    from components.contracts.settings import Settings

    refs = images.image_refs(Settings.from_env().image_registry)
    docs = next(yaml.safe_load_all((REPO / "pipelines/cashier_integrity.yaml").read_text()))
    executors = docs["deploymentSpec"]["executors"]
    in_yaml = {e["container"]["image"] for e in executors.values()}
    assert in_yaml == set(refs.values())
    for module in images.STAGE_MODULES:
        comp = yaml.safe_load((REPO / f"components/{module}/component.yaml").read_text())
        (executor,) = comp["deploymentSpec"]["executors"].values()
        assert executor["container"]["image"] == refs[images.stage_name(module)]
    assert ":latest" not in (REPO / "pipelines/cashier_integrity.yaml").read_text()


def _fake_client(present=(), digest="sha256:" + "a" * 64):
    from docker.errors import ImageNotFound

    client = mock.MagicMock(name="DockerClient")
    have = set(present)

    def get(ref):
        if ref not in have:
            raise ImageNotFound(ref)
        return mock.MagicMock(id=f"sha256:{ref}", attrs={"Size": 123_000_000})

    def build(**kwargs):
        have.add(kwargs["tag"])
        return mock.MagicMock(id="sha256:new"), iter([{"stream": "Step 1/9"}])

    client.images.get.side_effect = get
    client.images.build.side_effect = build
    client.images.push.side_effect = lambda *a, **k: iter(
        [{"status": "Pushing"}, {"aux": {"Digest": digest}}]
    )
    return client


def test_build_passes_base_refs_and_skips_present_tags(tiny_repo):
    plan = images.plan_images(tiny_repo, "reg.example/ci", ["datagen"])
    client = _fake_client(present={images.PYTHON_BASE})
    results = images.build_all(client, tiny_repo, plan)
    calls = [c.kwargs for c in client.images.build.call_args_list]
    assert [c["tag"] for c in calls] == [p.ref for p in plan]
    assert calls[0]["buildargs"] == {"PYTHON_BASE": images.PYTHON_BASE}
    assert calls[1]["buildargs"] == {"DEPS_IMAGE": plan[0].ref, "STAGE": "datagen"}
    assert calls[1]["target"] == "stage"
    assert calls[1]["network_mode"] == "host" and calls[1]["pull"] is False
    assert [r.cached for r in results] == [False, False]

    again = images.build_all(client, tiny_repo, plan)  # same content tag: reused
    assert client.images.build.call_count == 2 and [r.cached for r in again] == [True, True]


def test_build_without_base_image_names_the_script(tiny_repo):
    plan = images.plan_images(tiny_repo, "reg.example/ci", ["datagen"])
    with pytest.raises(images.BuildError, match=r"base image .* not present \(run scripts/base"):
        images.build_all(_fake_client(), tiny_repo, plan)


def test_push_reports_digest_and_errors_in_one_line():
    client = _fake_client()
    assert images.push_image(client, "r.example/x:t") == "sha256:" + "a" * 64
    client.images.push.side_effect = lambda *a, **k: iter([{"error": "denied: not authorized"}])
    with pytest.raises(images.BuildError, match=r"push r\.example/x:t failed: denied"):
        images.push_image(client, "r.example/x:t")


def test_serving_build_refuses_unbaked_bundle(tiny_repo):
    plan = images.plan_images(tiny_repo, "r.example", ["serving"])
    client = _fake_client(present={images.PYTHON_BASE})
    with pytest.raises(images.BuildError, match=r"tools\.delivery\.bake"):
        images.build_all(client, tiny_repo, plan)
    client.images.build.assert_not_called()


def test_script_report_keeps_the_deploy_workflow_shape(tiny_repo, tmp_path):
    """deploy.yml reads ``."serving-lambda".ref`` and ``.digest`` from the report."""
    from tools.delivery import images as script

    client = _fake_client(present={images.PYTHON_BASE})
    report = tmp_path / "build.json"
    code = script.main(["--repo", str(tiny_repo), "--only", "split", "--registry", "r.example",
                        "--push", "--report", str(report)], client_factory=lambda: client)  # fmt: skip
    assert code == 0
    data = json.loads(report.read_text())
    assert set(data) == {"stage-deps", "split"}
    assert data["split"]["digest"] == "sha256:" + "a" * 64
    assert data["split"]["ref"].startswith("r.example/split:")


def _run(args, **env):
    import os

    return subprocess.run([sys.executable, "-m", "tools.delivery.images", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=REPO, timeout=120)  # fmt: skip


def test_no_engine_is_a_one_line_error(tmp_path):
    out = _run(["--only", "datagen"], DOCKER_HOST=f"unix://{tmp_path / 'nobody.sock'}")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: no Docker engine answers at DOCKER_HOST=unix://")


def test_dry_run_prints_the_plan_without_an_engine():
    out = _run(["--dry-run", "--registry", "reg.example/ci", "--only", "serving-lambda",
                "--only", "register"], DOCKER_HOST="unix:///nonexistent")  # fmt: skip
    assert out.returncode == 0, out.stderr
    for name in ("stage-deps", "register", "serving-lambda"):
        assert re.search(rf"^{name}: reg\.example/ci/{name}:[0-9a-f]{{16}}$", out.stdout, re.M)
    assert "docker build -f serving/Dockerfile --target lambda" in out.stdout
    assert "NOT BUILDABLE HERE" in out.stdout
