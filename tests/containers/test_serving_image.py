"""The serving ``server`` image (serving/Dockerfile, target ``server``) over real HTTP.

A demo bundle (``tools.demo.build_demo_bundle``: the project's generator and both
models) is baked into ``serving/model/`` of a copy of the build context, the image is built
from it with ``pipelines.images`` and started with its own CMD (uvicorn on port 8000, user
10001). ``/v1/predict``, ``/readyz`` and ``/metrics`` answer over HTTP; the same image given
a tampered bundle (one byte of one file changed, manifest unchanged) refuses to start.

Not built here: the ``lambda`` target, whose base (public.ecr.aws/lambda/python) cannot be
pulled on these machines; it is lint-checked (tests/unit/test_delivery_images.py).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import BRIEF_REQUEST, REPO, free_port, get, post_json
from tests.containers.conftest import build


@pytest.fixture(scope="module")
def serving_image(docker_client, tmp_path_factory) -> dict:
    """The server image built from a context with a freshly baked demo bundle."""
    from tools.demo import build_demo_bundle

    ctx = tmp_path_factory.mktemp("serving-context")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "model", "var")
    shutil.copytree(REPO / "components", ctx / "components", ignore=ignore)
    shutil.copytree(REPO / "serving", ctx / "serving", ignore=ignore)
    shutil.copy(REPO / ".dockerignore", ctx / ".dockerignore")
    build_demo_bundle(ctx / "serving/model", rows=2000, n_estimators=15, iforest_trees=20)
    ref = build(docker_client, ctx, ["serving"])["serving"]
    return {"ref": ref, "bundle": ctx / "serving/model"}


def _start(client, ref, **kwargs):
    port = free_port()
    container = client.containers.run(
        ref, detach=True, ports={"8000/tcp": ("127.0.0.1", port)}, **kwargs
    )
    return container, f"http://127.0.0.1:{port}"


def _wait_ready(container, base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"container exited:\n{container.logs().decode()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{base}/readyz not ready:\n{container.logs().decode()[-3000:]}")


def test_server_image_answers_predict_readyz_and_metrics(docker_client, serving_image):
    image = docker_client.images.get(serving_image["ref"])
    assert image.attrs["Config"]["User"] == "10001:10001"
    container, base = _start(docker_client, serving_image["ref"])
    try:
        _wait_ready(container, base)
        status, body = post_json(f"{base}/v1/predict", BRIEF_REQUEST)
        assert status == 200, body
        assert 0 <= body["risk_score"] <= 100
        assert body["risk_level"] in ("Low Risk", "Medium Risk", "High Risk")
        status, bad = post_json(f"{base}/v1/predict", {**BRIEF_REQUEST, "no_sale_count": -1})
        assert status == 400, bad
        metrics = get(f"{base}/metrics")[1].decode()
        assert 'route="/v1/predict",status="200"} 1.0' in metrics
    finally:
        container.remove(force=True)


def test_server_image_refuses_a_tampered_bundle(docker_client, serving_image, tmp_path):
    tampered = tmp_path / "bundle"
    shutil.copytree(serving_image["bundle"], tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    victim = tampered / "xgb.ubj"
    assert victim.name in manifest["files"]  # a file the manifest vouches for
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    tampered.chmod(0o755)
    container, _ = _start(
        docker_client, serving_image["ref"],
        environment={"MODEL_DIR": "/bundle"},
        volumes={str(tampered): {"bind": "/bundle", "mode": "ro"}},
    )  # fmt: skip
    try:
        code = container.wait(timeout=300)["StatusCode"]
        logs = container.logs().decode()
        assert code != 0, f"started with a tampered {victim.name}:\n{logs[-2000:]}"
        assert victim.name in logs and "sha256" in logs.lower(), logs[-2000:]
    finally:
        container.remove(force=True)
