"""Run the pipeline DSL through ``kfp.local.DockerRunner`` (each task in its stage image).

This is KFP's own local Docker execution, useful to smoke-test the built images; it has
none of the local runner's extras (content cache, resume, run record). Needs a Docker
engine; ``docker_available()`` tells whether one answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.contracts.settings import Settings


def docker_available() -> bool:
    """True when a Docker engine answers a ping through the Docker SDK."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def run_with_docker(
    settings: Settings, arguments: Mapping[str, Any], pipeline_root: str | None = None
):
    """Run the whole pipeline with ``kfp.local.init(runner=kfp.local.DockerRunner())``.

    Args:
        settings: Image registry/tag and the default pipeline root (must be a local folder:
            kfp.local mounts it into the containers).
        arguments: Typed pipeline arguments.
        pipeline_root: Overrides ``settings.pipeline_root``.

    Raises:
        RuntimeError: No Docker engine answers, or the root is not a local folder.
    """
    from kfp import local

    from pipelines.pipeline import build_pipeline

    if not docker_available():
        raise RuntimeError("no Docker engine answers (docker SDK ping failed); --docker needs one")
    root = pipeline_root or settings.pipeline_root
    if root.startswith("s3://"):
        raise RuntimeError("--docker needs a local pipeline root (kfp.local mounts it)")
    local.init(runner=local.DockerRunner(), pipeline_root=root, raise_on_error=True)
    pipeline = build_pipeline(settings.image_registry, settings.image_tag)
    return pipeline(**dict(arguments))
