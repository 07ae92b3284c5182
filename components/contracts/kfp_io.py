"""KFP executor output: how a container component reports artifact metadata.

A KFP v2 container component fills the UI's Metrics / ClassificationMetrics panels by
writing the executor output JSON to the path the launcher names in the executor input
``{{$}}`` (field ``outputs.outputFile``); artifact names and URIs come from the same JSON.
The KFP v2 backend launcher reads that file after the command exits
(kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go``, ``execute`` ->
``getExecutorOutputFile(executorInput.GetOutputs().GetOutputFile())``) and never substitutes
``{{$.outputs.output_file}}`` in container args, so the path is taken from ``{{$}}``, as
``kfp.dsl.executor.Executor`` does. The local runner builds the same executor input
(``kfp.local``), so both read the same file.

Stage CLIs take ``--executor-input JSON``, optional so the CLI also runs stand-alone;
``--executor-output PATH`` overrides the path for stand-alone use (no component passes it).
"""

from __future__ import annotations

import json
from typing import Any

from components.contracts import storage


def classification_metrics(
    labels: list[str],
    confusion: list[list[int]],
    roc: list[tuple[float, float, float]] | None = None,
) -> dict[str, Any]:
    """Metadata of a ``ClassificationMetrics`` artifact as the KFP UI renders it.

    Args:
        labels: Class names, in the confusion matrix's row/column order.
        confusion: ``confusion[i][j]`` = count of true class i predicted as j.
        roc: ``(threshold, true_positive_rate, false_positive_rate)`` points.
    """
    meta: dict[str, Any] = {
        "confusionMatrix": {
            "annotationSpecs": [{"displayName": name} for name in labels],
            "rows": [{"row": [int(v) for v in row]} for row in confusion],
        }
    }
    if roc:
        meta["confidenceMetrics"] = [
            {"confidenceThreshold": float(t), "recall": float(r), "falsePositiveRate": float(f)}
            for t, r, f in roc
        ]
    return meta


def input_parameters(executor_input: str | None) -> dict[str, Any]:
    """The task's input parameter values (``inputs.parameterValues`` of ``{{$}}``); {}
    without an executor input (a stand-alone run)."""
    if not executor_input:
        return {}
    return dict(json.loads(executor_input).get("inputs", {}).get("parameterValues", {}))


def executor_output_path(spec: dict[str, Any], override: str | None = None) -> str:
    """Where the executor output goes: ``override`` if given, else ``outputs.outputFile``.

    Raises:
        ValueError: Neither names a path (an executor input without ``outputs.outputFile``).
    """
    path = override or spec.get("outputs", {}).get("outputFile")
    if not path:
        raise ValueError("the executor input has no outputs.outputFile and no --executor-output")
    return path


def write_executor_output(
    executor_input: str | None,
    output_file: str | None,
    artifact_metadata: dict[str, dict[str, Any]],
) -> None:
    """Write the executor output JSON for the given output artifacts' metadata.

    Parent folders are created (the backend's path sits under the task root, which the
    launcher creates only when the task has an output artifact there).

    Args:
        executor_input: The ``{{$}}`` JSON string; the output path (``outputs.outputFile``)
            and the names and URIs of output artifacts are taken from it. None when the CLI
            runs outside KFP (then nothing is written).
        output_file: Path that overrides ``outputs.outputFile`` (stand-alone use); None
            takes the executor input's.
        artifact_metadata: Output artifact name -> metadata dict (e.g. Metrics values,
            or ``classification_metrics(...)``).
    """
    if not executor_input:
        return
    spec = json.loads(executor_input)
    output_file = executor_output_path(spec, output_file)
    declared = spec.get("outputs", {}).get("artifacts", {})
    artifacts: dict[str, Any] = {}
    for name, metadata in artifact_metadata.items():
        if name not in declared:
            raise KeyError(f"executor input declares no output artifact '{name}'")
        runtime = declared[name]["artifacts"][0]
        artifacts[name] = {
            "artifacts": [
                {
                    "name": runtime.get("name", ""),
                    "uri": runtime.get("uri", ""),
                    "metadata": {**runtime.get("metadata", {}), **metadata},
                }
            ]
        }
    storage.write_json({"artifacts": artifacts}, output_file)
