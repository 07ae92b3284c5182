"""Compile-time check: every placeholder in a container's command and args is one the KFP v2
backend resolves.

``kfp.local`` (and so our local runner) resolves more placeholders than the backend does, so a
pipeline can run locally and still pass a literal ``{{$.outputs.output_file}}`` to a stage on
Kubeflow. This module holds the backend's list, read from its Go source, and checks a compiled
pipeline spec against it: ``python -m pipelines compile`` and ``compile-check`` fail on any
other placeholder, naming the task, the argument and the placeholder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What the KFP v2 backend substitutes in a container task's command and args
# (kubeflow/pipelines, read at commit 7b70c7b9 of master, 2026-08-21):
#
# - backend/src/v2/driver/driver.go ``initPodSpecPatch`` runs ``resolveContainerArgs``
#   (backend/src/v2/driver/util.go) over command and args: it substitutes
#   ``{{$.inputs.parameters['NAME']}}`` (``fullInputParameterRe``) and expands
#   ``{"IfPresent": ...}`` clauses; args containing ``$.outputs`` are left for the launcher.
#   The run-level placeholders (``{{$.pipeline_job_uuid}}``, ``{{$.pipeline_job_name}}``,
#   ``{{$.pipeline_task_name}}``, ...) are resolved only in backend/src/v2/driver/resolve.go
#   ``resolveInputParameter``, when a task *input* is a runtime-value constant equal to one -
#   never inside command or args.
# - The user command and args reach the launcher as one list; ``NewLauncherV2``
#   (backend/src/v2/component/launcher_v2.go) makes its first element the command and the rest
#   the args. ``compileCmdAndArgs`` substitutes ``{{$}}`` in both, and the map built by
#   ``getPlaceholders`` in the args only (its loop over the command writes to a variable that
#   is never used), so the executable itself gets ``{{$}}`` and input parameters only.
# - ``getPlaceholders`` builds exactly: input artifact ``uri``/``path``, output artifact
#   ``uri``/``path``, input parameters, output parameter ``output_file``. Artifact
#   ``metadata``, ``{{$.outputs.output_file}}`` (the executor output path: it is read from
#   ``outputs.outputFile`` of ``{{$}}``) and every run-level placeholder stay literal.
SUPPORTED: dict[str, tuple[str, str] | None] = {
    "{{$}}": None,
    "{{$.inputs.parameters['NAME']}}": ("inputDefinitions", "parameters"),
    "{{$.inputs.artifacts['NAME'].uri}}": ("inputDefinitions", "artifacts"),
    "{{$.inputs.artifacts['NAME'].path}}": ("inputDefinitions", "artifacts"),
    "{{$.outputs.artifacts['NAME'].uri}}": ("outputDefinitions", "artifacts"),
    "{{$.outputs.artifacts['NAME'].path}}": ("outputDefinitions", "artifacts"),
    "{{$.outputs.parameters['NAME'].output_file}}": ("outputDefinitions", "parameters"),
}
"""Placeholders substituted in args -> where the component must declare NAME."""
SUPPORTED_IN_EXECUTABLE = ("{{$}}", "{{$.inputs.parameters['NAME']}}")
"""Those substituted in the executable (the first element of command + args)."""

_PATTERNS = {
    template: re.compile(re.escape(template).replace("NAME", "(?P<name>[^']+)"))
    for template in SUPPORTED
}
_ANY_PLACEHOLDER = re.compile(r"\{\{.*?\}\}")


@dataclass(frozen=True)
class Unresolved:
    """A placeholder the backend would leave literal in a task's command line."""

    task: str
    arg: str
    placeholder: str
    reason: str

    def __str__(self) -> str:
        return f"task {self.task}: {self.placeholder} in argument {self.arg!r}: {self.reason}"


class PlaceholderError(ValueError):
    """A compiled pipeline passes a placeholder the KFP v2 backend does not resolve."""


def _strings(arg: str) -> tuple[list[str], str | None]:
    """The strings of one arg to scan: itself, or those inside an ``IfPresent`` clause (the
    driver expands it); second: the name of any other structured placeholder (``Concat``),
    which neither the driver nor the launcher expands."""
    stripped = arg.strip()
    if not (stripped.startswith("{") and not stripped.startswith("{{")):
        return [arg], None
    try:
        clause = json.loads(stripped)
    except ValueError:
        return [arg], None
    if not isinstance(clause, dict):
        return [arg], None
    if set(clause) != {"IfPresent"}:
        return [], ", ".join(sorted(clause))
    strings: list[str] = []
    body = clause["IfPresent"]
    for branch in (body.get("Then"), body.get("Else")):
        for item in [branch] if isinstance(branch, str) else branch or []:
            nested, other = _strings(item) if isinstance(item, str) else ([], "non-string")
            if other:
                return [], other
            strings += nested
    return strings, None


def _check_arg(
    task: str, arg: str, shown: str, component: Mapping[str, Any], executable: bool
) -> Iterator[Unresolved]:
    """Problems of one element of a task's command line (``shown``: it with its flag)."""
    strings, structured = _strings(arg)
    if structured:
        yield Unresolved(
            task, shown, structured, "the backend driver expands only IfPresent clauses"
        )
    allowed = SUPPORTED_IN_EXECUTABLE if executable else tuple(SUPPORTED)
    for text in strings:
        for match in _ANY_PLACEHOLDER.finditer(text):
            found = match.group(0)
            template = next((t for t, rx in _PATTERNS.items() if rx.fullmatch(found)), None)
            if template is None:
                yield Unresolved(task, shown, found, "the KFP v2 backend does not substitute it")
            elif template not in allowed:
                yield Unresolved(
                    task, shown, found, "the launcher substitutes only {{$}} in the executable"
                )
            elif (declared_in := SUPPORTED[template]) is not None:
                name = _PATTERNS[template].fullmatch(found)["name"]
                section, field = declared_in
                if name not in component.get(section, {}).get(field, {}):
                    yield Unresolved(task, shown, found, f"the component declares no {name}")


def check_spec(spec: Mapping[str, Any]) -> list[Unresolved]:
    """Every unresolved placeholder in a compiled pipeline spec (the IR document as a dict).

    Tasks are found through ``root.dag.tasks`` (nested DAGs too) -> component -> executor.
    """
    components = spec.get("components", {})
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    problems: list[Unresolved] = []

    def walk(dag_component: Mapping[str, Any]) -> None:
        for task, task_spec in sorted(dag_component.get("dag", {}).get("tasks", {}).items()):
            component = components.get(task_spec.get("componentRef", {}).get("name", ""), {})
            if "dag" in component:
                walk(component)
                continue
            container = executors.get(component.get("executorLabel", ""), {}).get("container")
            if not container:
                continue
            line = [*container.get("command", []), *container.get("args", [])]
            for index, arg in enumerate(line):
                flag = str(line[index - 1]) if index else ""
                shown = f"{flag} {arg}" if flag.startswith("-") else str(arg)
                problems.extend(_check_arg(task, str(arg), shown, component, executable=index == 0))

    walk(spec.get("root", {}))
    return problems


def load_spec(path: str | Path) -> dict[str, Any]:
    """The pipeline spec document of a compiled YAML (the first document; a second one, the
    kfp-kubernetes platform spec, holds no command or args)."""
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    if not docs or "deploymentSpec" not in docs[0]:
        raise PlaceholderError(f"{path}: not a compiled KFP pipeline (no deploymentSpec)")
    return docs[0]


def check_file(path: str | Path) -> None:
    """Raise ``PlaceholderError`` listing every unresolved placeholder in a compiled YAML."""
    problems = check_spec(load_spec(path))
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        raise PlaceholderError(
            f"{path}: {len(problems)} placeholder(s) the KFP v2 backend leaves literal:\n  "
            f"{lines}\nsupported: {', '.join(SUPPORTED)}"
        )
