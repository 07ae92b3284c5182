"""Container tests: the project's real images, built here and run by a real Docker engine.

Every test in this folder is skipped, with the reason, when no engine answers (plain
``make test`` ignores the folder; ``make test-containers`` and ``.ci/run`` run it). Images
are built with ``pipelines.images`` when missing (a present content tag is the same image,
so ``make images`` before the tests makes this a no-op); the OS + Python base image must
exist (``make base-image``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines import images
from pipelines.runner.container import engine_available

REPO = Path(__file__).resolve().parents[2]
ENGINE = engine_available()
NO_ENGINE = (
    f"no Docker engine answers at DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}"
    " (start dockerd as .ci/run does, then `make test-containers`)"
)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.containers)
            if not ENGINE:
                item.add_marker(pytest.mark.skip(reason=NO_ENGINE))


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = images.connect(timeout=900)
    try:
        yield client
    finally:
        client.close()


def build(client: Any, repo: Path, only: list[str]) -> dict[str, str]:
    """Build (or reuse) the named images from ``repo``; returns ``{name: ref}``."""
    if not images.image_present(client, images.PYTHON_BASE):
        pytest.fail(f"base image {images.PYTHON_BASE} missing: run `make base-image` first")
    planned = images.plan_images(repo, "", only)
    results = images.build_all(client, repo, planned)
    return {r.name: r.ref for r in results}


@pytest.fixture(scope="session")
def stage_images(docker_client) -> dict[str, str]:
    """``{stage image name: ref}`` of the seven stage images, as the compiled YAML names them."""
    refs = build(docker_client, REPO, list(images.STAGE_IMAGES))
    return {name: refs[name] for name in images.STAGE_IMAGES}
