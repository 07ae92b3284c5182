"""scripts/build_images.py: Dockerfile parsing, content digests, tags, and the Docker SDK path.

There is no Docker engine on this machine, so the build/push calls are checked against a
mocked Docker client (``unittest.mock``); the "no engine" error path is exercised for real
with ``DOCKER_HOST`` pointing at a socket nobody listens on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/build_images.py"


def _load():
    spec = importlib.util.spec_from_file_location("build_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_images", module)
    spec.loader.exec_module(module)
    return module


bi = _load()

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
    ins = bi.parse_dockerfile(MULTI)
    assert [i.keyword for i in ins][:5] == ["ARG", "FROM", "COPY", "RUN", "FROM"]
    run = ins[3]
    assert run.args == "pip install -r /tmp/req.txt" and run.line == 5


def test_stages_and_target_chain():
    stages = bi.dockerfile_stages(MULTI)
    assert [s.name for s in stages] == ["deps", "server", "lambda"]
    assert stages[1].user == "10001" and stages[1].cmd == ("uvicorn", "app:main")
    assert stages[1].copies[1].workdir == "/app"
    assert bi.copy_sources(MULTI, "server") == ["req.txt", "app/"]
    assert bi.copy_sources(MULTI) == ["lam/"]  # default target = last stage, no deps
    with pytest.raises(bi.BuildError, match="'nope' not in Dockerfile"):
        bi.copy_sources(MULTI, "nope")


def test_tag_and_ref():
    assert bi.image_tag("abc1234", "f" * 64) == "abc1234-ffffffffffff"
    assert bi.image_ref("reg.example/ns/", "train-xgb", "t") == "reg.example/ns/train-xgb:t"
    with pytest.raises(bi.BuildError, match="IMAGE_REGISTRY is empty"):
        bi.image_ref(" ", "x", "t")


def test_image_names_match_stage_modules():
    names = [s.name for s in bi.image_specs()]
    assert names == ["datagen", "split", "features", "train-xgb", "train-iforest", "evaluate",
                     "register", "serving-lambda", "serving"]  # fmt: skip


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    """A repo with one stage image (datagen) and the serving Dockerfile shape."""
    (tmp_path / "components/contracts").mkdir(parents=True)
    (tmp_path / "components/datagen").mkdir()
    (tmp_path / "components/__init__.py").write_text("")
    (tmp_path / "components/contracts/schemas.py").write_text("X = 1\n")
    (tmp_path / "components/contracts/__pycache__").mkdir()
    (tmp_path / "components/contracts/__pycache__/schemas.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "components/datagen/__main__.py").write_text("print('hi')\n")
    (tmp_path / "components/datagen/requirements.txt").write_text("numpy==2.4.6\n")
    (tmp_path / "components/datagen/Dockerfile").write_text(
        (REPO / "components/datagen/Dockerfile").read_text()
    )
    (tmp_path / "README.md").write_text("unrelated\n")
    (tmp_path / ".dockerignore").write_text((REPO / ".dockerignore").read_text())
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving/app.py").write_text("")
    (tmp_path / "serving/requirements.txt").write_text("")
    (tmp_path / "serving/Dockerfile").write_text((REPO / "serving/Dockerfile").read_text())
    return tmp_path


def test_plan_digest_tracks_exactly_the_image_files(tiny_repo):
    (p,) = bi.plan_images(tiny_repo, "reg.example/ci", "abc1234", ["datagen"])
    assert p.files[0] == "components/datagen/Dockerfile"
    assert set(p.files) == {
        "components/datagen/Dockerfile",
        "components/__init__.py",
        "components/contracts/schemas.py",
        "components/datagen/__main__.py",
        "components/datagen/requirements.txt",
    }  # fmt: skip  (no __pycache__: .dockerignore applies)
    assert re.fullmatch(r"reg\.example/ci/datagen:abc1234-[0-9a-f]{12}", p.ref)

    (tiny_repo / "README.md").write_text("changed, but not in the image\n")
    (same,) = bi.plan_images(tiny_repo, "reg.example/ci", "abc1234", ["datagen"])
    assert same.digest == p.digest

    (tiny_repo / "components/contracts/schemas.py").write_text("X = 2\n")
    (changed,) = bi.plan_images(tiny_repo, "reg.example/ci", "abc1234", ["datagen"])
    assert changed.digest != p.digest and changed.tag != p.tag


def test_plan_reports_missing_bundle_and_unknown_names(tiny_repo):
    (p,) = bi.plan_images(tiny_repo, "r.example", "abc1234", ["serving-lambda"])
    assert p.missing == ("serving/model/",)
    with pytest.raises(bi.BuildError, match="unknown image"):
        bi.plan_images(tiny_repo, "r.example", "abc1234", ["nope"])


def _fake_client(digest="sha256:" + "a" * 64):
    client = mock.MagicMock(name="DockerClient")
    image = mock.MagicMock(id="sha256:imageid")
    client.images.build.return_value = (image, iter([{"stream": "Step 1/9"}]))
    client.images.push.return_value = iter([{"status": "Pushing"}, {"aux": {"Digest": digest}}])
    return client


def test_build_and_push_calls_with_mocked_client(tiny_repo, tmp_path):
    client = _fake_client()
    planned = bi.plan_images(tiny_repo, "reg.example/ci", "abc1234", ["datagen"])
    results = bi.build_all(client, tiny_repo, planned, git_sha="abc1234", push=True)
    kwargs = client.images.build.call_args.kwargs
    assert kwargs["path"] == str(tiny_repo)
    assert kwargs["dockerfile"] == "components/datagen/Dockerfile"
    assert kwargs["tag"] == planned[0].ref and kwargs["target"] is None
    assert kwargs["labels"]["org.opencontainers.image.revision"] == "abc1234"
    (repo,) = client.images.push.call_args.args
    assert repo == "reg.example/ci/datagen"
    assert client.images.push.call_args.kwargs["tag"] == planned[0].tag
    assert results["datagen"]["digest"] == "sha256:" + "a" * 64

    out = tmp_path / "images.json"
    bi.write_image_map(planned, out)
    assert json.loads(out.read_text()) == {"datagen": planned[0].ref}


def test_push_error_is_one_clear_line():
    client = mock.MagicMock()
    client.images.push.return_value = iter([{"error": "denied: not authorized"}])
    with pytest.raises(bi.BuildError, match=r"push r\.example/x:t failed: denied"):
        bi.push_image(client, "r.example/x:t")


def test_serving_build_refuses_unbaked_bundle(tiny_repo):
    planned = bi.plan_images(tiny_repo, "r.example", "abc1234", ["serving-lambda"])
    client = _fake_client()
    with pytest.raises(bi.BuildError, match=r"bake_bundle\.py"):
        bi.build_all(client, tiny_repo, planned, git_sha="abc1234")
    client.images.build.assert_not_called()


def test_main_with_mocked_engine_writes_image_map(tiny_repo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    client = _fake_client()
    code = bi.main(["--repo", str(tiny_repo), "--only", "datagen", "--git-sha", "abc1234def",
                    "--registry", "reg.example/ci"], client_factory=lambda: client)  # fmt: skip
    assert code == 0
    client.ping.assert_called_once()
    mapping = json.loads((tmp_path / "var/images.json").read_text())
    assert re.fullmatch(r"reg\.example/ci/datagen:abc1234-[0-9a-f]{12}", mapping["datagen"])


def _run(args, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=120)  # fmt: skip


def test_no_engine_is_a_one_line_error(tmp_path):
    sock = tmp_path / "nobody.sock"
    out = _run(["--only", "datagen"], DOCKER_HOST=f"unix://{sock}", VAR_DIR=str(tmp_path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: no Docker engine answers at DOCKER_HOST=unix://")
    assert not (tmp_path / "images.json").exists()


def test_dry_run_prints_the_plan_without_an_engine(tmp_path):
    out = _run(["--dry-run", "--registry", "reg.example/ci"], DOCKER_HOST="unix:///nonexistent",
               VAR_DIR=str(tmp_path))  # fmt: skip
    assert out.returncode == 0, out.stderr
    for spec in bi.image_specs():
        assert re.search(rf"^{spec.name}: reg\.example/ci/{spec.name}:[0-9a-f]{{7}}-[0-9a-f]{{12}}$",
                         out.stdout, re.M), spec.name  # fmt: skip
    assert "docker build -f serving/Dockerfile --target lambda" in out.stdout
    assert not (tmp_path / "images.json").exists()
