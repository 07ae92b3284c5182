"""The compile-time check that every placeholder in a container's command line is one the
KFP v2 backend resolves (``pipelines.placeholders``)."""

import json

import pytest
from kfp import compiler, dsl

from pipelines import placeholders
from pipelines.compile import DEFAULT_PIPELINE_YAML
from pipelines.components import STAGES


def _compiled(tmp_path, component) -> dict:
    @dsl.pipeline(name="p")
    def pipe():
        component()

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipe, str(path))
    return placeholders.load_spec(path)


@dsl.container_component
def _writes_output_file(metrics: dsl.Output[dsl.Metrics]):
    return dsl.ContainerSpec(
        image="x",
        command=["python", "-m", "stage"],
        args=["--out", metrics.path, "--executor-output", dsl.PIPELINE_TASK_EXECUTOR_OUTPUT_PATH_PLACEHOLDER],
    )  # fmt: skip


@dsl.container_component
def _tags_job_uuid(rows: int = 3):
    return dsl.ContainerSpec(
        image="x",
        command=["python", "-m", "stage"],
        args=["--rows", rows, "--pipeline-run-id", dsl.PIPELINE_JOB_ID_PLACEHOLDER],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("component", "task", "arg", "placeholder"),
    [
        (_writes_output_file, "writes-output-file", "--executor-output {{$.outputs.output_file}}",
         "{{$.outputs.output_file}}"),
        (_tags_job_uuid, "tags-job-uuid", "--pipeline-run-id {{$.pipeline_job_uuid}}",
         "{{$.pipeline_job_uuid}}"),
    ],
)  # fmt: skip
def test_placeholders_the_backend_leaves_literal_fail(tmp_path, component, task, arg, placeholder):
    (problem,) = placeholders.check_spec(_compiled(tmp_path, component))
    assert (problem.task, problem.arg, problem.placeholder) == (task, arg, placeholder)
    path = tmp_path / "p.yaml"
    with pytest.raises(placeholders.PlaceholderError, match=task) as err:
        placeholders.check_file(path)
    assert placeholder in str(err.value) and arg in str(err.value)


@dsl.container_component
def _supported(
    features: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model], rows: int, name: str = "n"
):
    return dsl.ContainerSpec(
        image="x",
        command=["python", "-m", "stage"],
        args=[
            "--in", features.path, "--in-uri", features.uri, "--out", model.path,
            "--out-uri", model.uri, "--rows", rows, "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
            dsl.IfPresentPlaceholder(input_name="name", then=["--name", name]),
        ],
    )  # fmt: skip


def test_every_supported_kind_passes(tmp_path):
    @dsl.container_component
    def source(out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(image="x", command=["true"], args=[out.path])

    @dsl.pipeline(name="ok")
    def pipe(rows: int = 1):
        _supported(features=source().outputs["out"], rows=rows)

    path = tmp_path / "ok.yaml"
    compiler.Compiler().compile(pipe, str(path))
    args = placeholders.load_spec(path)["deploymentSpec"]["executors"]["exec-supported"]
    args = args["container"]["args"]
    assert "{{$.inputs.artifacts['features'].uri}}" in args and args[-1].startswith('{"IfPresent"')
    placeholders.check_file(path)


def _spec(command: list[str], args: list[str], inputs: dict | None = None) -> dict:
    return {
        "root": {"dag": {"tasks": {"t": {"componentRef": {"name": "comp-t"}}}}},
        "components": {"comp-t": {"executorLabel": "exec-t", **(inputs or {})}},
        "deploymentSpec": {"executors": {"exec-t": {"container": {"command": command, "args": args}}}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("command", "args", "inputs", "placeholder"),
    [
        # getPlaceholders has no artifact metadata, and no run/task-level placeholders
        (["run"], ["{{$.inputs.artifacts['a'].metadata}}"],
         {"inputDefinitions": {"artifacts": {"a": {}}}}, "{{$.inputs.artifacts['a'].metadata}}"),
        (["run"], ["--task", "{{$.pipeline_task_name}}"], None, "{{$.pipeline_task_name}}"),
        # the launcher's command loop never writes back: only {{$}} reaches the executable
        (["{{$.inputs.artifacts['a'].path}}"], [], {"inputDefinitions": {"artifacts": {"a": {}}}},
         "{{$.inputs.artifacts['a'].path}}"),
        # a name the component does not declare is never in the executor input
        (["run"], ["{{$.inputs.parameters['nope']}}"], None, "{{$.inputs.parameters['nope']}}"),
        # the driver expands IfPresent only; Concat reaches the program as JSON
        (["run"], [json.dumps({"Concat": ["a", "b"]})], None, "Concat"),
        (["run"], [json.dumps({"IfPresent": {"InputName": "x", "Then": ["{{$.pipeline_job_name}}"]}})],
         None, "{{$.pipeline_job_name}}"),
    ],
)  # fmt: skip
def test_unsupported_forms_fail(command, args, inputs, placeholder):
    (problem,) = placeholders.check_spec(_spec(command, args, inputs))
    assert problem.task == "t" and problem.placeholder == placeholder


def test_input_parameters_are_resolved_in_the_executable_too():
    spec = _spec(["{{$.inputs.parameters['tool']}}"], ["{{$}}"],
                 {"inputDefinitions": {"parameters": {"tool": {}}}})  # fmt: skip
    assert placeholders.check_spec(spec) == []


def test_our_compiled_yaml_passes():
    placeholders.check_file(DEFAULT_PIPELINE_YAML)
    for stage in STAGES:
        placeholders.check_file(stage.component_yaml)


def test_compile_check_fails_on_an_unresolved_placeholder(tmp_path, capsys):
    from pipelines.__main__ import main

    bad = tmp_path / "bad.yaml"
    text = DEFAULT_PIPELINE_YAML.read_text()
    assert "- '{{$}}'" in text
    bad.write_text(text.replace("- '{{$}}'", "- '{{$.outputs.output_file}}'", 1))
    assert main(["compile-check", "--output", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "{{$.outputs.output_file}}" in err and "--executor-input" in err and "task " in err


def test_compile_fails_on_a_component_with_an_unresolved_placeholder(tmp_path, monkeypatch):
    import components.datagen.component as datagen
    from pipelines.compile import compile_all

    real_build = datagen.build

    def build_with_job_uuid(image: str):
        component = real_build(image)
        component.component_spec.implementation.container.args += [
            "--pipeline-run-id", dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ]  # fmt: skip
        return component

    monkeypatch.setattr(datagen, "build", build_with_job_uuid)
    with pytest.raises(placeholders.PlaceholderError, match="task datagen") as err:
        compile_all("r", "t", pipeline_yaml=tmp_path / "p.yaml", components_root=tmp_path)
    assert "--pipeline-run-id {{$.pipeline_job_uuid}}" in str(err.value)
