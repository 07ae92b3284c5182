"""Compiled pipeline and component YAML: fresh, loadable with the KFP SDK, right images."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import components

from pipelines.compile import DEFAULT_PIPELINE_YAML, check_fresh, compile_all
from pipelines.components import STAGES
from pipelines.images import image_refs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REGISTRY, TAG = "ghcr.io/cashier-integrity", "latest"  # Settings defaults


def test_checked_in_yaml_is_fresh():
    stale = check_fresh(REGISTRY, TAG)
    assert not stale, "stale compiled YAML (run `make compile`):\n" + "\n".join(
        s.diff[:2000] for s in stale
    )


def test_stale_yaml_is_detected_and_compile_check_exits_1(tmp_path):
    copy = tmp_path / "pipeline.yaml"
    text = DEFAULT_PIPELINE_YAML.read_text()
    copy.write_text(text.replace("defaultValue: 200000.0", "defaultValue: 100.0", 1))
    stale = check_fresh(REGISTRY, TAG, pipeline_yaml=copy)
    assert [s.path for s in stale] == [copy]
    assert "200000" in stale[0].diff
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "compile-check", "--output", str(copy),
         "--image-registry", REGISTRY, "--image-tag", TAG],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"stale compiled YAML: {copy}" in proc.stderr


def test_pipeline_yaml_loads_with_the_kfp_sdk():
    pipeline = components.load_component_from_file(str(DEFAULT_PIPELINE_YAML))
    assert pipeline.name == "cashier-integrity"
    inputs = pipeline.component_spec.inputs
    for name in ("rows", "seed", "fraud_rate", "xgb_n_estimators", "min_pr_auc", "max_regression"):
        assert name in inputs and inputs[name].default is not None
    tasks = pipeline.pipeline_spec.root.dag.tasks
    assert set(tasks) == {s.name for s in STAGES}
    assert all(t.retry_policy.max_retry_count >= 1 for t in tasks.values())
    assert {n for n, t in tasks.items() if not t.caching_options.enable_cache} == {"register"}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_component_yaml_loads_and_runs_the_stage_cli(stage):
    comp = components.load_component_from_file(str(stage.component_yaml))
    assert comp.name == stage.name
    container = comp.component_spec.implementation.container
    assert container.image == image_refs(REGISTRY)[stage.name]  # content tag, never :latest
    assert container.command == ["python", "-m", f"components.{stage.module}"]
    assert comp.description  # docstrings reach the KFP UI
    ir = comp.pipeline_spec.components[f"comp-{stage.name}"]
    described = [
        *ir.input_definitions.parameters.items(), *ir.input_definitions.artifacts.items(),
        *ir.output_definitions.artifacts.items(),
    ]  # fmt: skip
    assert len(described) == len(comp.component_spec.inputs) + len(comp.component_spec.outputs)
    for name, spec in described:
        assert spec.description, f"{stage.name}: parameter {name} has no description"


def test_metric_stages_get_the_executor_input_and_no_output_path_placeholder():
    """The executor output path comes from ``{{$}}`` (``outputs.outputFile``); the backend
    launcher never substitutes ``{{$.outputs.output_file}}`` or ``{{$.pipeline_job_uuid}}``."""
    for stage in STAGES:
        args = [str(a) for a in components.load_component_from_file(str(stage.component_yaml))
                .component_spec.implementation.container.args]  # fmt: skip
        has_metrics = stage.module in ("train_xgb", "train_iforest", "evaluate")
        assert ("--executor-input" in args) == has_metrics, stage.name
        if has_metrics:
            assert args[args.index("--executor-input") + 1] == "{{$}}"
        assert "--executor-output" not in args and "--pipeline-run-id" not in args, stage.name
        assert not any("{{$.outputs.output_file}}" in a or "pipeline_job" in a for a in args)


def test_image_registry_and_tag_come_from_compile_flags(tmp_path):
    shutil.copytree(
        REPO / "components", tmp_path / "components", ignore=shutil.ignore_patterns("*.yaml")
    )
    written = compile_all("registry.example/ci", "abc123", pipeline_yaml=tmp_path / "p.yaml",
                          components_root=tmp_path / "components")  # fmt: skip
    text = (tmp_path / "p.yaml").read_text()
    assert "image: registry.example/ci/train-xgb:abc123" in text
    assert "ghcr.io" not in text
    assert len(written) == 1 + len(STAGES)


def test_images_map_pins_exact_image_references(tmp_path):
    """The build script's images.json wins over registry + tag, per stage, in every YAML."""
    from pipelines.compile import compile_all

    compile_all(
        "registry.example",
        "v1",
        pipeline_yaml=tmp_path / "pipeline.yaml",
        components_root=tmp_path,
        images={"datagen": "registry.example/datagen:abc1234-0123456789ab"},
    )
    pipeline = (tmp_path / "pipeline.yaml").read_text()
    assert "registry.example/datagen:abc1234-0123456789ab" in pipeline
    assert "registry.example/datagen:v1" not in pipeline
    assert "registry.example/split:v1" in pipeline
    component = (tmp_path / "datagen" / "component.yaml").read_text()
    assert "registry.example/datagen:abc1234-0123456789ab" in component
