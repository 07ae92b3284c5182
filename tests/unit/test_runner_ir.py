"""Local runner: reading compiled IR into a DAG, ordering, parameters, run modes."""

import pytest
from kfp import compiler, dsl

from pipelines.runner import ir
from pipelines.runner.engine import CACHE_ONLY, FORCE, RUN, SKIP, plan_modes


@dsl.container_component
def _step(src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset], n: int = 1):
    return dsl.ContainerSpec(
        image="toy", command=["python", "-c", "pass"], args=[src.path, out.path, n]
    )


@dsl.container_component
def _start(out: dsl.Output[dsl.Dataset], n: int = 1, ratio: float = 0.5, flag: bool = False):
    return dsl.ContainerSpec(
        image="toy", command=["python", "-c", "pass"], args=[out.path, n, ratio, flag]
    )


@dsl.container_component
def _join(a: dsl.Input[dsl.Dataset], b: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(
        image="toy", command=["python", "-c", "pass"], args=[a.path, b.path, out.path]
    )


@dsl.pipeline(name="diamond")
def _diamond(n: int = 3, ratio: float = 0.25, flag: bool = True, name: str = "x"):
    s = _start(n=n, ratio=ratio, flag=flag)
    left = _step(src=s.outputs["out"], n=n).set_retry(
        num_retries=2, backoff_duration="3s", backoff_factor=2.0
    )
    right = _step(src=s.outputs["out"], n=7)
    _join(a=left.outputs["out"], b=right.outputs["out"])


@pytest.fixture(scope="module")
def dag(tmp_path_factory) -> ir.Dag:
    path = tmp_path_factory.mktemp("ir") / "diamond.yaml"
    compiler.Compiler().compile(_diamond, str(path))
    spec, platform = ir.load_pipeline(path)
    return ir.build_dag(spec, platform)


def test_dag_dependencies_come_from_artifact_edges(dag):
    assert dag.dependencies == {
        "start": (),
        "step": ("start",),
        "step-2": ("start",),
        "join": ("step", "step-2"),
    }


def test_topological_order_puts_every_task_after_its_dependencies(dag):
    order = ir.topological_order(dag.dependencies)
    assert order.index("start") < order.index("step") < order.index("join")
    assert order.index("step-2") < order.index("join")


def test_topological_order_rejects_cycles():
    with pytest.raises(ir.PipelineError, match="cycle"):
        ir.topological_order({"a": ("b",), "b": ("a",)})


def test_ready_tasks_releases_siblings_together(dag):
    deps = dag.dependencies
    assert ir.ready_tasks(deps, set(), set()) == ["start"]
    assert ir.ready_tasks(deps, {"start"}, {"start"}) == ["step", "step-2"]
    assert ir.ready_tasks(deps, {"start", "step"}, {"start", "step", "step-2"}) == []
    assert ir.ready_tasks(deps, {"start", "step", "step-2"}, {"start", "step", "step-2"}) == [
        "join"
    ]


def test_downstream_and_upstream(dag):
    deps = dag.dependencies
    assert ir.downstream(deps, "step") == {"step", "join"}
    assert ir.upstream(deps, "join") == {"start", "step", "step-2"}


def test_retry_policy_is_read_from_the_ir(dag):
    retry = dag.tasks["step"].retry
    assert retry.max_retries == 2
    assert retry.backoff_s == 3.0
    assert [retry.delay(i) for i in (1, 2, 3)] == [3.0, 6.0, 12.0]
    assert dag.tasks["step-2"].retry.max_retries == 0


def test_parameters_defaults_and_typed_overrides(dag):
    assert ir.resolve_parameters(dag, {}) == {"n": 3, "ratio": 0.25, "flag": True, "name": "x"}
    got = ir.resolve_parameters(dag, {"n": "10", "ratio": "0.5", "flag": "false", "name": "7"})
    assert got == {"n": 10, "ratio": 0.5, "flag": False, "name": "7"}
    assert isinstance(got["n"], int)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rows": "1"}, "unknown pipeline parameter"),
        ({"n": "1.5"}, "expected number_integer"),
        ({"flag": "maybe"}, "expected boolean"),
        ({"ratio": "abc"}, "expected number_double"),
    ],
)
def test_bad_parameters_fail_with_the_name(dag, overrides, message):
    with pytest.raises(ir.PipelineError, match=message):
        ir.resolve_parameters(dag, overrides)


def test_task_parameters_resolve_pipeline_params_and_constants(dag):
    params = ir.resolve_parameters(dag, {"n": "5"})
    assert ir.task_parameters(dag.tasks["step"], params, {}) == {"n": 5}
    assert ir.task_parameters(dag.tasks["step-2"], params, {}) == {"n": 7}


def test_parse_param_args():
    assert ir.parse_param_args(["rows=1000", "name=a=b"]) == {"rows": "1000", "name": "a=b"}
    with pytest.raises(ir.PipelineError, match="NAME=VALUE"):
        ir.parse_param_args(["rows"])


def test_plan_modes(dag):
    deps = dag.dependencies
    assert set(plan_modes(deps).values()) == {RUN}
    assert set(plan_modes(deps, no_cache=True).values()) == {FORCE}
    assert plan_modes(deps, rerun_from="step") == {
        "start": CACHE_ONLY,
        "step": FORCE,
        "step-2": CACHE_ONLY,
        "join": FORCE,
    }
    assert plan_modes(deps, only="step") == {
        "start": CACHE_ONLY,
        "step": FORCE,
        "step-2": SKIP,
        "join": SKIP,
    }
    assert plan_modes(deps, cache_disabled={"join"})["join"] == FORCE
    # a cache-disabled task runs whatever the flags, and can never come from the cache
    assert plan_modes(deps, cache_disabled={"join"}, rerun_from="step")["join"] == FORCE
    assert plan_modes(deps, cache_disabled={"step-2"}, only="step")["step-2"] == SKIP
    with pytest.raises(ir.PipelineError, match="needs start from the cache, but caching is off"):
        plan_modes(deps, cache_disabled={"start"}, only="step")
    with pytest.raises(ir.PipelineError, match="use --rerun-from step-2"):
        plan_modes(deps, cache_disabled={"step-2"}, rerun_from="step")
    with pytest.raises(ir.PipelineError, match="no such task"):
        plan_modes(deps, rerun_from="nope")


def test_load_pipeline_rejects_non_pipeline_yaml(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("a: 1\n")
    with pytest.raises(ir.PipelineError, match="not a compiled KFP pipeline"):
        ir.load_pipeline(bad)


def test_real_pipeline_yaml_builds_the_expected_dag():
    spec, platform = ir.load_pipeline("pipelines/cashier_integrity.yaml")
    dag = ir.build_dag(spec, platform)
    deps = dag.dependencies
    assert deps["split"] == ("datagen",)
    assert deps["features"] == ("split",)
    assert deps["train-xgb"] == ("features",) and deps["train-iforest"] == ("features",)
    assert deps["evaluate"] == ("features", "train-iforest", "train-xgb")
    assert set(deps["register"]) == {"evaluate", "features", "train-iforest", "train-xgb"}
    assert ir.downstream(deps, "evaluate") == {"evaluate", "register"}
