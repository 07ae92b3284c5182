"""``python -m pipelines submit``: argument handling and what reaches ``kfp.Client``.

There is no Kubeflow cluster here, so ``kfp.Client`` is replaced by a recording fake; the
tests check that the exact compiled YAML and typed parameters are passed to it.
"""

from types import SimpleNamespace

import pytest

from pipelines import __main__ as cli
from pipelines import submit as submit_mod
from pipelines.runner.ir import PipelineError

YAML = "pipelines/cashier_integrity.yaml"


class FakeClient:
    def __init__(self, host):
        self.host = host
        self.calls = []

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        self.calls.append(("run", pipeline_file, kwargs))
        with open(pipeline_file) as f:
            self.package = f.read()
        return SimpleNamespace(run_id="run-123")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", name, {"namespace": namespace}))
        return SimpleNamespace(experiment_id="exp-9")

    def create_recurring_run(self, **kwargs):
        self.calls.append(("recurring", kwargs.get("pipeline_package_path"), kwargs))
        return SimpleNamespace(recurring_run_id="rr-7")


@pytest.fixture
def fake(monkeypatch):
    clients = []

    def factory(host):
        clients.append(FakeClient(host))
        return clients[-1]

    real_submit = submit_mod.submit
    monkeypatch.setattr(
        submit_mod, "submit", lambda *a, **k: real_submit(*a, client_factory=factory, **k)
    )
    return clients


def test_submit_passes_the_compiled_yaml_and_typed_params(fake, capsys):
    code = cli.main(["submit", "--host", "http://127.0.0.1:8080", "--experiment", "exp", "--run-name", "r1",
                     "--param", "rows=5000", "--param", "fraud_rate=0.05", "--param", "holdout_cashier_fraction=0.25"])  # fmt: skip
    assert code == 0
    client = fake[0]
    assert client.host == "http://127.0.0.1:8080"
    kind, path, kwargs = client.calls[0]
    assert kind == "run" and path.endswith(YAML)
    with open(YAML) as f:
        assert client.package == f.read()
    assert kwargs["arguments"] == {
        "rows": 5000,
        "fraud_rate": 0.05,
        "holdout_cashier_fraction": 0.25,
    }
    assert isinstance(kwargs["arguments"]["rows"], int)
    assert kwargs["run_name"] == "r1" and kwargs["experiment_name"] == "exp"
    assert "run-123" in capsys.readouterr().out


def test_schedule_creates_a_recurring_run(fake, capsys):
    code = cli.main(
        [
            "submit",
            "--host",
            "http://127.0.0.1:8080",
            "--schedule",
            "0 0 3 * * *",
            "--param",
            "seed=7",
        ]
    )
    assert code == 0
    kinds = [c[0] for c in fake[0].calls]
    assert kinds == ["experiment", "recurring"]
    kwargs = fake[0].calls[1][2]
    assert kwargs["cron_expression"] == "0 0 3 * * *"
    assert kwargs["experiment_id"] == "exp-9"
    assert kwargs["params"] == {"seed": 7}
    assert "rr-7" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["nope=1"], "unknown pipeline parameter"),
        (["rows=many"], "expected number_integer"),
        (["rows"], "NAME=VALUE"),
    ],
)
def test_bad_params_fail_before_any_client_call(fake, capsys, params, message):
    argv = ["submit", "--host", "http://127.0.0.1:8080"]
    for p in params:
        argv += ["--param", p]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert fake == []


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="no compiled pipeline"):
        submit_mod.submit(
            tmp_path / "none.yaml", host="http://127.0.0.1:1", client_factory=FakeClient
        )


def test_host_is_required():
    with pytest.raises(SystemExit):
        cli.main(["submit"])


def test_submission_keeps_each_tasks_compiled_caching_flag(fake):
    """kfp.Client's enable_caching=True/False overrides every task; None keeps the YAML's, so
    register (side effects) stays uncached on Kubeflow."""
    assert cli.main(["submit", "--host", "http://h"]) == 0
    assert cli.main(["submit", "--host", "http://h", "--schedule", "0 3 * * *"]) == 0
    calls = [c for client in fake for c in client.calls if c[0] != "experiment"]
    assert [kind for kind, _, _ in calls] == ["run", "recurring"]
    assert all(kwargs["enable_caching"] is None for _, _, kwargs in calls)
