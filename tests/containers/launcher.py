"""The KFP v2 backend launcher's argument resolution, reproduced from its Go source.

Source: kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go`` (``getPlaceholders``,
``LocalPathForURI``, ``prepareOutputFolders``, ``OutputMetadataFilepath``) and
``backend/src/v2/driver/driver.go`` (``outputs.OutputFile = component.OutputMetadataFilepath``,
output parameter files ``/tmp/kfp/outputs/<name>``). A Kubernetes cluster cannot run here,
so this is the part of the launcher a stage image sees: the executor input JSON (``{{$}}``),
the placeholders it substitutes in command and args, the ``/s3/<bucket>/...`` local paths of
``s3://`` artifacts, and where it reads the executor output back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

OUTPUT_METADATA_FILE = "/tmp/kfp_outputs/output_metadata.json"
"""``component.OutputMetadataFilepath``: the driver sets ``outputs.outputFile`` to it."""
OUTPUT_PARAMETERS_DIR = "/tmp/kfp/outputs"
EXECUTOR_INPUT_KEY = "{{$}}"


def local_path_for_uri(uri: str) -> str:
    """``LocalPathForURI``: ``gs://`` -> ``/gcs/``, ``minio://`` -> ``/minio/``, ``s3://`` ->
    ``/s3/``; anything else is not a recognised storage URI."""
    for scheme, mount in (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/")):
        if uri.startswith(scheme):
            return mount + uri.removeprefix(scheme)
    raise ValueError(f"{uri}: not a gs://, minio:// or s3:// URI")


def _format_parameter(value: Any, declared: int) -> str:
    """``getPlaceholders``' formatting: strings as is, numbers ``FormatFloat('f', -1)``,
    bools ``true``/``false``, lists and structs as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return np.format_float_positional(float(value), trim="-")
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def executor_input(
    component: pb.ComponentSpec,
    *,
    parameters: Mapping[str, Any],
    inputs: Mapping[str, str],
    output_root: str,
) -> dict[str, Any]:
    """The executor input the driver hands the launcher, as a JSON-able dict.

    Args:
        component: The task's component spec (input/output definitions).
        parameters: Input parameter values (defaults of the component fill the rest).
        inputs: Input artifact name -> ``s3://`` URI (an upstream task's output).
        output_root: ``s3://<bucket>/<pipeline>/<run>/<task>``; output artifacts go below it.
    """
    params = dict(parameters)
    for name, spec in component.input_definitions.parameters.items():
        if name not in params and spec.HasField("default_value"):
            params[name] = json_format.MessageToDict(spec.default_value)
    artifacts_in = {
        name: {"artifacts": [{
            "name": name, "uri": uri, "metadata": {},
            "type": {"schemaTitle": component.input_definitions.artifacts[name]
                     .artifact_type.schema_title},
        }]}
        for name, uri in inputs.items()
    }  # fmt: skip
    artifacts_out = {
        name: {"artifacts": [{
            "name": name, "uri": f"{output_root}/{name}", "metadata": {},
            "type": {"schemaTitle": spec.artifact_type.schema_title},
        }]}
        for name, spec in component.output_definitions.artifacts.items()
    }  # fmt: skip
    message = {
        "inputs": {"parameterValues": params, "artifacts": artifacts_in},
        "outputs": {
            "artifacts": artifacts_out,
            "parameters": {
                name: {"outputFile": f"{OUTPUT_PARAMETERS_DIR}/{name}"}
                for name in component.output_definitions.parameters
            },
            "outputFile": OUTPUT_METADATA_FILE,
        },
    }
    json_format.ParseDict(message, pb.ExecutorInput())  # it is a valid ExecutorInput
    return message


def placeholders(executor_input: Mapping[str, Any], component: pb.ComponentSpec) -> dict[str, str]:
    """``getPlaceholders``: exactly the placeholders the backend launcher substitutes."""
    out: dict[str, str] = {}
    for name, lst in executor_input["inputs"]["artifacts"].items():
        uri = lst["artifacts"][0]["uri"]
        out[f"{{{{$.inputs.artifacts['{name}'].uri}}}}"] = uri
        out[f"{{{{$.inputs.artifacts['{name}'].path}}}}"] = local_path_for_uri(uri)
    for name, lst in executor_input["outputs"]["artifacts"].items():
        uri = lst["artifacts"][0]["uri"]
        out[f"{{{{$.outputs.artifacts['{name}'].uri}}}}"] = uri
        out[f"{{{{$.outputs.artifacts['{name}'].path}}}}"] = local_path_for_uri(uri)
    declared = component.input_definitions.parameters
    for name, value in executor_input["inputs"]["parameterValues"].items():
        kind = declared[name].parameter_type if name in declared else 0
        out[f"{{{{$.inputs.parameters['{name}']}}}}"] = _format_parameter(value, kind)
    for name, spec in executor_input["outputs"]["parameters"].items():
        out[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = spec["outputFile"]
    return out


def resolve(
    parts: list[str], executor_input: Mapping[str, Any], component: pb.ComponentSpec
) -> list[str]:
    """``compileCmdAndArgs`` on ``command + args``: ``{{$}}`` (the executor input as
    protojson) everywhere, then every known placeholder by plain string replacement in the
    args. The first element is the launcher's ``cmd``, which gets ``{{$}}`` only. Anything
    else (``{{$.outputs.output_file}}``, ``{{$.pipeline_job_uuid}}``, ...) stays literal."""
    as_json = json_format.MessageToJson(
        json_format.ParseDict(executor_input, pb.ExecutorInput()), indent=None
    )
    table = placeholders(executor_input, component)
    out = [parts[0].replace(EXECUTOR_INPUT_KEY, as_json)]
    for part in parts[1:]:
        part = part.replace(EXECUTOR_INPUT_KEY, as_json)
        for key, value in table.items():
            part = part.replace(key, value)
        out.append(part)
    return out


def output_dirs(executor_input: Mapping[str, Any]) -> list[str]:
    """``prepareOutputFolders``: the local folders the launcher creates before the command."""
    dirs = {
        spec["outputFile"].rpartition("/")[0]
        for spec in executor_input["outputs"]["parameters"].values()
    }
    for lst in executor_input["outputs"]["artifacts"].values():
        dirs.add(local_path_for_uri(lst["artifacts"][0]["uri"]).rpartition("/")[0])
    return sorted(dirs)


def parse_executor_output(text: str) -> pb.ExecutorOutput:
    """``getExecutorOutputFile``: ``protojson.Unmarshal`` into ``ExecutorOutput``, strictly
    (an unknown field or a wrong type is an error, as in Go)."""
    return json_format.Parse(text, pb.ExecutorOutput(), ignore_unknown_fields=False)
