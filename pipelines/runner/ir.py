"""Read a compiled KFP pipeline YAML into a DAG of tasks the runner can schedule.

Pure functions over the ``PipelineSpec`` protobuf: no file I/O except ``load_pipeline``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

PT = pb.ParameterType.ParameterTypeEnum


class PipelineError(ValueError):
    """The pipeline YAML or a run argument is not something the runner can execute."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings of one task (from ``task.set_retry``)."""

    max_retries: int = 0
    backoff_s: float = 0.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 3600.0

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        return min(self.backoff_s * self.backoff_factor ** (retry_number - 1), self.backoff_max_s)


@dataclass(frozen=True)
class ParamSource:
    """Where a task input parameter comes from."""

    kind: str
    """``pipeline`` (a pipeline parameter), ``constant`` or ``task`` (an upstream output)."""
    ref: str = ""
    """Pipeline parameter name, or output parameter key for ``task``."""
    producer: str = ""
    """Producing task for ``task``."""
    value: Any = None
    """The value for ``constant``."""


@dataclass(frozen=True)
class ArtifactSource:
    """Which upstream task output feeds a task input artifact."""

    producer: str
    output: str


@dataclass
class TaskNode:
    """One task of the root DAG with everything needed to run it."""

    name: str
    component_name: str
    component_spec: pb.ComponentSpec
    executor_label: str
    container: pb.PipelineDeploymentConfig.PipelineContainerSpec | None
    importer: pb.PipelineDeploymentConfig.ImporterSpec | None
    dependencies: tuple[str, ...]
    parameters: dict[str, ParamSource]
    artifacts: dict[str, ArtifactSource]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache_enabled: bool = True
    timeout_s: float | None = None

    @property
    def output_artifacts(self) -> dict[str, pb.ComponentOutputsSpec.ArtifactSpec]:
        return dict(self.component_spec.output_definitions.artifacts)


@dataclass
class Dag:
    """The root DAG of a pipeline."""

    name: str
    spec: pb.PipelineSpec
    tasks: dict[str, TaskNode]
    parameters: dict[str, pb.ComponentInputsSpec.ParameterSpec]

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        return {name: task.dependencies for name, task in self.tasks.items()}


def load_pipeline(path: str | Path) -> tuple[pb.PipelineSpec, dict[str, Any]]:
    """Parse a compiled pipeline YAML (IR) and its optional platform spec document.

    Raises:
        PipelineError: The file is missing or is not a KFP pipeline spec.
    """
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"{path}: cannot read pipeline YAML ({exc})") from exc
    if not docs or "root" not in docs[0] or "deploymentSpec" not in docs[0]:
        raise PipelineError(f"{path}: not a compiled KFP pipeline (no root / deploymentSpec)")
    spec = pb.PipelineSpec()
    try:
        json_format.ParseDict(docs[0], spec)
    except json_format.ParseError as exc:
        raise PipelineError(f"{path}: invalid pipeline spec ({exc})") from exc
    platform = docs[1] if len(docs) > 1 else {}
    return spec, platform


def _duration_s(policy, field_name: str, default: float) -> float:
    if not policy.HasField(field_name):
        return default
    return getattr(policy, field_name).ToTimedelta().total_seconds()


def _platform_timeouts(platform: Mapping[str, Any]) -> dict[str, float]:
    """Executor label -> timeout seconds from a kfp-kubernetes platform spec, if any."""
    executors = (platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})).get(
        "executors", {}
    )
    out = {}
    for label, cfg in executors.items():
        seconds = cfg.get("activeDeadlineSeconds")
        if seconds:
            out[label] = float(seconds)
    return out


def build_dag(spec: pb.PipelineSpec, platform: Mapping[str, Any] | None = None) -> Dag:
    """Turn the root DAG of a pipeline spec into schedulable ``TaskNode`` objects.

    Raises:
        PipelineError: The pipeline uses a feature the runner does not execute
            (sub-DAGs: conditions, loops, nested pipelines).
    """
    timeouts = _platform_timeouts(platform or {})
    executors = spec.deployment_spec["executors"]
    tasks: dict[str, TaskNode] = {}
    for name, task in spec.root.dag.tasks.items():
        component_name = task.component_ref.name
        component = spec.components[component_name]
        if component.WhichOneof("implementation") != "executor_label":
            raise PipelineError(
                f"task '{name}' is a sub-DAG (condition, loop or nested pipeline); "
                "the local runner executes flat pipelines only"
            )
        if task.HasField("trigger_policy") and task.trigger_policy.condition:
            raise PipelineError(f"task '{name}' has a trigger condition; not supported locally")
        label = component.executor_label
        exec_struct = executors[label]
        executor = pb.PipelineDeploymentConfig.ExecutorSpec()
        json_format.ParseDict(json_format.MessageToDict(exec_struct), executor)
        kind = executor.WhichOneof("spec")
        if kind not in ("container", "importer"):
            raise PipelineError(f"task '{name}': executor kind '{kind}' not supported locally")

        params: dict[str, ParamSource] = {}
        for pname, pspec in task.inputs.parameters.items():
            which = pspec.WhichOneof("kind")
            if which == "component_input_parameter":
                params[pname] = ParamSource("pipeline", ref=pspec.component_input_parameter)
            elif which == "runtime_value":
                value = json_format.MessageToDict(pspec.runtime_value.constant)
                params[pname] = ParamSource("constant", value=value)
            elif which == "task_output_parameter":
                params[pname] = ParamSource(
                    "task",
                    ref=pspec.task_output_parameter.output_parameter_key,
                    producer=pspec.task_output_parameter.producer_task,
                )
            else:
                raise PipelineError(f"task '{name}' parameter '{pname}': '{which}' not supported")
        artifacts: dict[str, ArtifactSource] = {}
        for aname, aspec in task.inputs.artifacts.items():
            if aspec.WhichOneof("kind") != "task_output_artifact":
                raise PipelineError(
                    f"task '{name}' artifact '{aname}': only upstream task outputs are supported"
                )
            artifacts[aname] = ArtifactSource(
                aspec.task_output_artifact.producer_task,
                aspec.task_output_artifact.output_artifact_key,
            )
        deps = set(task.dependent_tasks)
        deps |= {src.producer for src in artifacts.values()}
        deps |= {src.producer for src in params.values() if src.kind == "task"}
        retry = RetryPolicy()
        if task.HasField("retry_policy"):
            rp = task.retry_policy
            retry = RetryPolicy(
                max_retries=int(rp.max_retry_count),
                backoff_s=_duration_s(rp, "backoff_duration", 0.0),
                backoff_factor=float(rp.backoff_factor or 2.0),
                backoff_max_s=_duration_s(rp, "backoff_max_duration", 3600.0),
            )
        tasks[name] = TaskNode(
            name=name,
            component_name=component_name,
            component_spec=component,
            executor_label=label,
            container=executor.container if kind == "container" else None,
            importer=executor.importer if kind == "importer" else None,
            dependencies=tuple(sorted(deps)),
            parameters=params,
            artifacts=artifacts,
            retry=retry,
            cache_enabled=(
                task.caching_options.enable_cache if task.HasField("caching_options") else True
            ),
            timeout_s=timeouts.get(label),
        )
    unknown = {d for t in tasks.values() for d in t.dependencies} - set(tasks)
    if unknown:
        raise PipelineError(f"tasks depend on unknown tasks: {', '.join(sorted(unknown))}")
    topological_order({n: t.dependencies for n, t in tasks.items()})  # rejects cycles
    return Dag(
        name=spec.pipeline_info.name,
        spec=spec,
        tasks=tasks,
        parameters=dict(spec.root.input_definitions.parameters),
    )


def topological_order(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Tasks in an order where every task comes after its dependencies (ties by name).

    Raises:
        PipelineError: The graph has a cycle.
    """
    remaining = {name: set(d) for name, d in deps.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(n for n, d in remaining.items() if not d - set(order))
        if not ready:
            raise PipelineError(f"dependency cycle among: {', '.join(sorted(remaining))}")
        for name in ready:
            order.append(name)
            del remaining[name]
    return order


def _reachable(edges: Mapping[str, Iterable[str]], starts: Iterable[str]) -> set[str]:
    """Every node reachable from ``starts`` along ``edges`` (``starts`` included)."""
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges[node])
    return seen


def downstream(deps: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """``start`` and every task that (transitively) depends on it."""
    children: dict[str, set[str]] = {n: set() for n in deps}
    for name, parents in deps.items():
        for parent in parents:
            children[parent].add(name)
    return _reachable(children, [start])


def upstream(deps: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """Every task ``start`` (transitively) depends on, excluding ``start``."""
    return _reachable(deps, deps[start])


def ready_tasks(deps: Mapping[str, Iterable[str]], done: set[str], started: set[str]) -> list[str]:
    """Tasks not yet started whose dependencies are all done, sorted by name."""
    return sorted(n for n, d in deps.items() if n not in started and set(d) <= done)


def _parse_value(name: str, raw: str, ptype: int) -> Any:
    try:
        if ptype == PT.NUMBER_INTEGER:
            value = float(raw)
            if not value.is_integer():
                raise ValueError("not an integer")
            return int(value)
        if ptype == PT.NUMBER_DOUBLE:
            return float(raw)
        if ptype == PT.BOOLEAN:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("not a boolean")
            return lowered in ("true", "1", "yes")
        if ptype in (PT.STRUCT, PT.LIST):
            return json.loads(raw)
    except (ValueError, json.JSONDecodeError) as exc:
        raise PipelineError(
            f"--param {name}={raw!r}: expected {PT.Name(ptype).lower()} ({exc})"
        ) from exc
    return raw


def _typed_default(spec: pb.ComponentInputsSpec.ParameterSpec) -> Any:
    value = json_format.MessageToDict(spec.default_value)
    if spec.parameter_type == PT.NUMBER_INTEGER and value is not None:
        return int(value)
    return value


def resolve_parameters(dag: Dag, overrides: Mapping[str, str | Any]) -> dict[str, Any]:
    """Pipeline parameter values: defaults from the YAML overridden by ``--param k=v``.

    String override values are parsed by the parameter's declared type.

    Raises:
        PipelineError: Unknown parameter, unparseable value, or a required one missing.
    """
    unknown = set(overrides) - set(dag.parameters)
    if unknown:
        raise PipelineError(
            f"unknown pipeline parameter(s): {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(dag.parameters))})"
        )
    values: dict[str, Any] = {}
    for name, spec in dag.parameters.items():
        if name in overrides:
            raw = overrides[name]
            values[name] = (
                _parse_value(name, raw, spec.parameter_type) if isinstance(raw, str) else raw
            )
        elif spec.HasField("default_value"):
            values[name] = _typed_default(spec)
        elif spec.is_optional:
            values[name] = None
        else:
            raise PipelineError(
                f"pipeline parameter '{name}' has no default; pass --param {name}=..."
            )
    return values


def task_parameters(
    task: TaskNode,
    pipeline_params: Mapping[str, Any],
    upstream_outputs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Resolve one task's input parameter values (pipeline params, constants, upstream outputs)."""
    values: dict[str, Any] = {}
    for name, src in task.parameters.items():
        if src.kind == "pipeline":
            values[name] = pipeline_params[src.ref]
        elif src.kind == "constant":
            values[name] = src.value
        else:
            values[name] = upstream_outputs[src.producer][src.ref]
    ints = {
        n
        for n, s in task.component_spec.input_definitions.parameters.items()
        if s.parameter_type == PT.NUMBER_INTEGER
    }
    for name in ints & set(values):
        if isinstance(values[name], float) and values[name].is_integer():
            values[name] = int(values[name])
    return values


def parse_param_args(pairs: Iterable[str]) -> dict[str, str]:
    """``["rows=1000", "seed=7"]`` -> ``{"rows": "1000", "seed": "7"}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PipelineError(f"--param {pair!r}: expected NAME=VALUE")
        out[key.strip()] = value
    return out
