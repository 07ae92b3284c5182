"""Executor output: written where the executor input says (``outputs.outputFile``), as the
KFP v2 backend launcher reads it, and valid as the ``ExecutorOutput`` proto."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.contracts import kfp_io


def _executor_input(output_file: str | None) -> str:
    outputs: dict = {
        "artifacts": {
            "metrics": {
                "artifacts": [
                    {
                        "name": "metrics",
                        "type": {"schemaTitle": "system.Metrics"},
                        "uri": "s3://bucket/root/train/salt/metrics",
                        "metadata": {"display_name": "m"},
                    }
                ]
            }
        }
    }
    if output_file is not None:
        outputs["outputFile"] = output_file
    return json.dumps({"inputs": {}, "outputs": outputs})


def test_written_to_output_file_of_the_executor_input_with_parent_folders(tmp_path):
    target = tmp_path / "s3" / "bucket" / "root" / "train" / "salt" / "output_metadata.json"
    kfp_io.write_executor_output(_executor_input(str(target)), None, {"metrics": {"auc": 0.9}})
    parsed = json_format.Parse(target.read_text(), pipeline_spec_pb2.ExecutorOutput())
    artifact = parsed.artifacts["metrics"].artifacts[0]
    assert artifact.uri == "s3://bucket/root/train/salt/metrics"
    assert dict(artifact.metadata) == {"display_name": "m", "auc": 0.9}


def test_an_explicit_path_wins_for_stand_alone_use(tmp_path):
    default, override = tmp_path / "a.json", tmp_path / "b.json"
    kfp_io.write_executor_output(_executor_input(str(default)), str(override), {"metrics": {}})
    assert override.exists() and not default.exists()


def test_no_executor_input_writes_nothing_and_no_path_is_an_error(tmp_path):
    kfp_io.write_executor_output(None, None, {"metrics": {"auc": 1.0}})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"outputs\.outputFile"):
        kfp_io.write_executor_output(_executor_input(None), None, {"metrics": {}})
