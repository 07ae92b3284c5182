"""Compile the pipeline and every component to YAML, regenerate the stage READMEs'
parameter tables, and check that the checked-in files are fresh."""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from components.contracts.spec import with_table
from pipelines.components import (
    REPO,
    STAGES,
    build_components,
    stage_spec,
    write_component_yamls,
)
from pipelines.pipeline import compile_pipeline
from pipelines.placeholders import check_file

DEFAULT_PIPELINE_YAML = REPO / "pipelines" / "cashier_integrity.yaml"


@dataclass(frozen=True)
class Stale:
    """A checked-in YAML that differs from a fresh compile."""

    path: Path
    diff: str


def fresh_readmes(components_root: Path | None = None) -> list[tuple[Path, str, str]]:
    """``(path, checked-in text, text with a fresh parameter table)`` for every stage README
    (the table comes from the stage spec; see ``components.contracts.spec``)."""
    from pipelines.pipeline import pipeline_params

    root = components_root or REPO / "components"
    feeds = [(name, module, p.name) for name, t in pipeline_params().items() for module, p in t]
    out = []
    for stage in STAGES:
        path = root / stage.module / "README.md"
        old = path.read_text() if path.exists() else ""
        names = {param: name for name, module, param in feeds if module == stage.module}
        try:
            new = with_table(old, stage_spec(stage).readme_table(names))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        out.append((path, old, new))
    return out


def write_readmes(components_root: Path | None = None) -> list[Path]:
    """Rewrite the parameter table of every stage README that is stale; returns those."""
    written = []
    for path, old, new in fresh_readmes(components_root):
        if new != old:
            path.write_text(new)
            written.append(path)
    return written


def compile_all(
    image_registry: str,
    image_tag: str,
    *,
    pipeline_yaml: Path = DEFAULT_PIPELINE_YAML,
    components_root: Path | None = None,
    task_env: Mapping[str, str] | None = None,
    images: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the pipeline YAML and every ``components/<stage>/component.yaml``.

    ``images`` (kebab-name -> image reference, e.g. ``var/images.json`` from
    ``scripts/build_images.py``) pins each component to exactly the image that was built.

    Raises:
        PlaceholderError: A written YAML passes a placeholder the KFP v2 backend does not
            resolve (``pipelines.placeholders``); the files stay for inspection.
    """
    written = [compile_pipeline(pipeline_yaml, image_registry, image_tag, task_env, images)]
    written += write_component_yamls(
        build_components(image_registry, image_tag, images), components_root
    )
    for path in written:
        check_file(path)
    if components_root is None:  # the repo's own components: their READMEs too
        written += write_readmes()
    return written


def check_fresh(
    image_registry: str,
    image_tag: str,
    *,
    pipeline_yaml: Path = DEFAULT_PIPELINE_YAML,
    components_root: Path | None = None,
) -> list[Stale]:
    """Compile into a temp folder and compare with the checked-in files.

    Returns:
        The stale (or missing) files with a unified diff; empty when everything is fresh.
    """
    components_root = components_root or REPO / "components"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        fresh_pipeline = tmp_path / "pipeline.yaml"
        compile_all(
            image_registry, image_tag, pipeline_yaml=fresh_pipeline, components_root=tmp_path
        )
        pairs = [(pipeline_yaml, fresh_pipeline)] + [
            (components_root / s.module / "component.yaml", tmp_path / s.module / "component.yaml")
            for s in STAGES
        ]
        compared = [
            (checked_in, checked_in.read_text() if checked_in.exists() else "", fresh.read_text())
            for checked_in, fresh in pairs
        ]
    compared += fresh_readmes(components_root)
    return [_stale(path, old, new) for path, old, new in compared if old != new]


def _stale(path: Path, old: str, new: str) -> Stale:
    diff = difflib.unified_diff(
        old.splitlines(True), new.splitlines(True),
        fromfile=f"{path} (checked in)", tofile="fresh compile", n=1,
    )  # fmt: skip
    return Stale(path, "".join(diff) or "(missing)")
