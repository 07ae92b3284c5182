"""The seven stage components, built for one image registry and tag.

Each stage's KFP definition lives beside its code in ``components/<stage>/component.py``
(``build(image)``), built from the stage's spec (``spec.py``); this module builds them all for the configured images and writes each
component's spec as ``components/<stage>/component.yaml`` (loadable with
``kfp.components.load_component_from_file``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from components.contracts.spec import StageSpec

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its Python module dir and its kebab-case KFP / image name."""

    module: str
    """Folder / module name under ``components/`` (``train_xgb``)."""
    name: str
    """Kebab-case component, task and image name (``train-xgb``)."""

    @property
    def component_yaml(self) -> Path:
        """Where this stage's compiled component spec is checked in."""
        return REPO / "components" / self.module / "component.yaml"


STAGES: tuple[Stage, ...] = (
    Stage("datagen", "datagen"),
    Stage("split", "split"),
    Stage("features", "features"),
    Stage("train_xgb", "train-xgb"),
    Stage("train_iforest", "train-iforest"),
    Stage("evaluate", "evaluate"),
    Stage("register", "register"),
)


CONTENT_TAG = ("", "latest")
"""``image_tag`` values that mean "the content-derived tag" (``:latest`` is never emitted)."""


def image_for(
    stage: Stage, image_registry: str, image_tag: str, images: Mapping[str, str] | None = None
) -> str:
    """Image reference of a stage.

    ``images`` (kebab-name -> reference) wins when it names the stage; an explicit
    ``image_tag`` gives ``<registry>/<kebab-name>:<tag>``; otherwise (the default, also for
    the settings' legacy ``latest``) the content-derived reference ``make images`` builds
    from this source (``pipelines.images``), so the YAML names exactly that image.
    """
    if images and stage.name in images:
        return images[stage.name]
    if image_tag not in CONTENT_TAG:
        return f"{image_registry.rstrip('/')}/{stage.name}:{image_tag}"
    from pipelines.images import image_refs

    return image_refs(image_registry)[stage.name]


def stage_spec(stage: Stage) -> StageSpec:
    """The stage's declared interface (``components/<stage>/spec.py``'s ``SPEC``)."""
    return importlib.import_module(f"components.{stage.module}.spec").SPEC


def build_components(
    image_registry: str, image_tag: str, images: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Build every stage's container component for the given images.

    Args:
        image_registry: Registry prefix, e.g. ``ghcr.io/cashier-integrity``.
        image_tag: Image tag; empty or ``latest`` means the content-derived tag.
        images: Exact per-stage references written by ``scripts/build_images.py``
            (``var/images.json``); they win over registry + tag.

    Returns:
        Stage module name (``train_xgb``) -> KFP container component.
    """
    built = {}
    for stage in STAGES:
        module = importlib.import_module(f"components.{stage.module}.component")
        built[stage.module] = module.build(image_for(stage, image_registry, image_tag, images))
    return built


def write_component_yamls(
    components: dict[str, object], out_root: Path | None = None
) -> list[Path]:
    """Compile each component to ``<out_root>/<stage>/component.yaml``.

    Args:
        components: Output of ``build_components``.
        out_root: Folder holding the stage folders; defaults to the repo's ``components/``.

    Returns:
        The written paths, in stage order.
    """
    from kfp import compiler

    out_root = out_root or REPO / "components"
    written = []
    for stage in STAGES:
        path = out_root / stage.module / "component.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(components[stage.module], str(path))
        written.append(path)
    return written
