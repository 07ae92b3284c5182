"""register against a real ``mlflow server`` process (tests/conftest.py ``mlflow_server``):
the models and evaluation of the local stage chain are registered over HTTP, artifacts go
through the server's artifact proxy (``mlflow-artifacts:/``), the alias moves on pass and
stays on reject, and the champion's pyfunc loads from the server and scores live rows."""

from __future__ import annotations

import uuid

import pytest
from test_stage_chain import (  # shared chain helpers (same folder)
    CHAIN_FLOORS,
    _env,
    check_registry_and_pyfunc,
    local_chain,  # noqa: F401  (session fixture re-exported for this module)
    register,
)

from components.contracts import storage


@pytest.mark.integration
def test_register_against_mlflow_server(local_chain, mlflow_server, tmp_path):  # noqa: F811
    import mlflow

    chain, env = local_chain
    suffix = uuid.uuid4().hex[:8]
    name = f"cashier-integrity-risk-{suffix}"  # the server is shared by the whole session
    server_env = _env(
        {
            **env,
            "MLFLOW_TRACKING_URI": mlflow_server,
            "MLFLOW_ARTIFACT_LOCATION": f"mlflow-artifacts:/registry-test-{suffix}",
            "MLFLOW_EXPERIMENT_NAME": f"registry-test-{suffix}",
            "MODEL_NAME": name,
        }
    )

    first = register(chain, *CHAIN_FLOORS, out=str(tmp_path / "first"), env=server_env)
    assert "ACCEPTED" in first.stdout
    version = check_registry_and_pyfunc(
        chain, mlflow_server, tmp_path, model_name=name, out=str(tmp_path / "first")
    )
    assert version == "1"

    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment = client.get_experiment_by_name(f"registry-test-{suffix}")
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'register'")
    assert len(runs) == 1 and runs[0].data.tags["gate_decision"] == "accepted"
    assert runs[0].data.metrics["blend_pr_auc"] > 0.05

    # A candidate that regresses beyond --max-regression (here: any drop at all, with a
    # floor above its own PR-AUC) is registered but rejected; the alias stays on version 1.
    second = register(chain, "--min-pr-auc", "0.9999", out=str(tmp_path / "second"), env=server_env)
    assert "REJECTED" in second.stdout
    decision = storage.open_output(str(tmp_path / "second" / "decision.json")).read_json()
    assert decision["model_version"] == "2" and not decision["alias_moved"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    v2 = client.get_model_version(name, "2")
    assert v2.tags["gate_decision"] == "rejected"
    assert "blend_pr_auc floor" in v2.tags["gate_reason"]
