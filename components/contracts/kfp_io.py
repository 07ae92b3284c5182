"""KFP executor output: how a container component reports artifact metadata.

A KFP v2 container component fills the UI's Metrics / ClassificationMetrics panels by
writing the executor output JSON to ``{{$.outputs.output_file}}``
(``dsl.PIPELINE_TASK_EXECUTOR_OUTPUT_PATH_PLACEHOLDER``); artifact names and URIs come from
the executor input ``{{$}}``. This mirrors ``kfp.dsl.executor.Executor.write_executor_output``
so the KFP launcher and our local runner read the same file.

Stage CLIs take ``--executor-input JSON --executor-output PATH``; both optional, so the CLI
also runs stand-alone.
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


def write_executor_output(
    executor_input: str | None,
    output_file: str | None,
    artifact_metadata: dict[str, dict[str, Any]],
) -> None:
    """Write the executor output JSON for the given output artifacts' metadata.

    Args:
        executor_input: The ``{{$}}`` JSON string; names and URIs of output artifacts are
            taken from it. None when the CLI runs outside KFP (then nothing is written).
        output_file: The ``{{$.outputs.output_file}}`` path. None: nothing is written.
        artifact_metadata: Output artifact name -> metadata dict (e.g. Metrics values,
            or ``classification_metrics(...)``).
    """
    if not output_file or not executor_input:
        return
    spec = json.loads(executor_input)
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
