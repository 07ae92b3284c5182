"""The typed spec of a stage: its parameters, inputs and outputs, declared once.

Each stage declares one ``StageSpec`` (in ``components/<stage>/spec.py``). Everything
else is derived from it:

* the stage CLI's flags (``cli.build_parser``): ``--in-<input>``, ``--out-<output>``,
  ``--<param>`` with the declared type, default, choices and help;
* the KFP container component (``StageSpec.component``): typed ``Input[...]`` /
  ``Output[...]`` artifacts, typed parameters with defaults, the help as descriptions, and
  a command that is exactly the stage CLI;
* the pipeline's parameters and defaults (``pipelines.pipeline``);
* the parameter table in ``components/<stage>/README.md`` (``readme_table``), kept fresh
  by ``python -m pipelines compile`` and checked by ``compile --check`` and a unit test.

Nothing here imports kfp at module level: the stage CLIs import their spec.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ARTIFACT_KINDS = frozenset(
    {"Artifact", "Dataset", "Model", "Metrics", "ClassificationMetrics", "HTML", "Markdown"}
)
"""KFP artifact types a stage may declare (``kfp.dsl`` names)."""

PARAM_TYPES = (int, float, str, bool)


@dataclass(frozen=True)
class Param:
    """One run knob of a stage."""

    name: str
    """snake_case name: the KFP input and (kebab-cased) the CLI flag."""
    type: type
    """``int``, ``float``, ``str`` or ``bool``."""
    default: Any
    """Default of the CLI, the component and the pipeline (``None``: CLI-only, unset)."""
    help: str
    """One sentence: CLI help, component and pipeline description, README table."""
    choices: tuple[str, ...] | None = None
    """Allowed values (checked by the CLI)."""
    kfp: bool = True
    """False for a CLI-only flag (stand-alone tuning) that is no component input."""

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise TypeError(f"{self.name}: type must be one of {PARAM_TYPES}, got {self.type}")
        if self.kfp and self.default is None:
            raise TypeError(f"{self.name}: a component parameter needs a default")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def params_from(cls: type, helps: Mapping[str, str], **options: Any) -> tuple[Param, ...]:
    """Parameters taken from the fields of a logic dataclass (name, type and default are the
    dataclass's; ``helps`` gives each one's help, in order). A ``date`` field becomes an
    ISO ``str``; ``X | None`` becomes ``X``. ``options``: more ``Param`` fields (``kfp``).
    """
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    out = []
    for name, text in helps.items():
        kind, default = hints[name], defaults[name]
        if default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name} has no plain default")
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        if kind is datetime.date:
            kind, default = str, default.isoformat()
        out.append(Param(name, kind, default, text, **options))
    return tuple(out)


@dataclass(frozen=True)
class Io:
    """One input or output artifact of a stage."""

    name: str
    """snake_case name, named by content (``historic``, ``live_stream``)."""
    kind: str
    """KFP artifact type (one of ``ARTIFACT_KINDS``)."""
    help: str
    """What it holds: CLI help, component description, README."""
    required: bool = True
    """CLI: the flag is required (an optional output is written only when named)."""

    def __post_init__(self) -> None:
        if self.kind not in ARTIFACT_KINDS:
            raise TypeError(f"{self.name}: unknown artifact kind {self.kind!r}")


@dataclass(frozen=True)
class StageSpec:
    """Everything a stage's CLI, component, pipeline and README say about its interface."""

    module: str
    """Folder / module name under ``components/`` (``train_xgb``)."""
    summary: str
    """One sentence: the CLI description and the component's description."""
    inputs: tuple[Io, ...] = ()
    outputs: tuple[Io, ...] = ()
    params: tuple[Param, ...] = ()
    executor_input: bool = False
    """The stage writes KFP output metadata (Metrics...): it takes ``--executor-input {{$}}``
    and, for stand-alone use, ``--executor-output``."""
    headline: tuple[str, ...] = ()
    """Names in the stage's ``metrics`` output that a run summary shows first."""

    @property
    def name(self) -> str:
        """Kebab-case component, image and CLI error-prefix name (``train-xgb``)."""
        return self.module.replace("_", "-")

    @property
    def command(self) -> list[str]:
        return ["python", "-m", f"components.{self.module}"]

    @property
    def kfp_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kfp)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.module} has no parameter {name!r}")

    def defaults(self) -> dict[str, Any]:
        """Component parameter name -> default."""
        return {p.name: p.default for p in self.kfp_params}

    # ------------------------------------------------------------------ KFP component

    def docstring(self) -> str:
        """Google-style docstring KFP reads the descriptions from."""
        args = [f"    {io.name}: {io.help}" for io in self.inputs]
        args += [f"    {p.name}: {p.help}" for p in self.kfp_params]
        lines = [self.summary, "", "Args:", *args]
        if self.outputs:
            lines += ["", "Returns:", *(f"    {io.name}: {io.help}" for io in self.outputs)]
        return "\n".join(lines)

    def signature(self, input_type, output_type, dsl) -> inspect.Signature:
        """The component function's signature: artifacts first, then parameters."""
        kw = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [
            inspect.Parameter(io.name, kw, annotation=input_type[getattr(dsl, io.kind)])
            for io in self.inputs
        ]
        params += [
            inspect.Parameter(io.name, kw, annotation=output_type[getattr(dsl, io.kind)])
            for io in self.outputs
        ]
        params += [
            inspect.Parameter(p.name, kw, annotation=p.type, default=p.default)
            for p in self.kfp_params
        ]
        return inspect.Signature(params)

    def component(self, image: str):
        """The KFP v2 container component of this stage, running its CLI in ``image``."""
        from kfp import dsl
        from kfp.dsl import Input, Output

        signature = self.signature(Input, Output, dsl)
        names = list(signature.parameters)

        def container(*values):
            given = dict(zip(names, values, strict=True))
            args: list[Any] = []
            for io in self.inputs:
                args += [f"--in-{io.name.replace('_', '-')}", given[io.name].path]
            for io in self.outputs:
                args += [f"--out-{io.name.replace('_', '-')}", given[io.name].path]
            for p in self.kfp_params:
                args += [p.flag, given[p.name]]
            if self.executor_input:
                args += ["--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER]
            return dsl.ContainerSpec(image=image, command=self.command, args=args)

        container.__name__ = container.__qualname__ = self.module
        container.__doc__ = self.docstring()
        container.__signature__ = signature
        return dsl.container_component(container)

    # ------------------------------------------------------------------ README

    def readme_table(self, pipeline_names: Mapping[str, str] | None = None) -> str:
        """Markdown table of the stage's parameters (the README's "Parameters" section).

        Args:
            pipeline_names: Stage parameter -> the pipeline parameter that feeds it.
        """
        if not self.params:
            return "This stage has no parameters."
        names = pipeline_names or {}
        rows = ["| flag | pipeline parameter | default | meaning |", "|---|---|---|---|"]
        for p in self.params:
            default = "unset" if p.default is None else f"`{_show(p.default)}`"
            choices = f" One of: {', '.join(f'`{c}`' for c in p.choices)}." if p.choices else ""
            knob = f"`{names[p.name]}`" if p.name in names else "- (CLI only)"
            rows.append(f"| `{p.flag}` | {knob} | {default} | {_cell(p.help)}{choices} |")
        return "\n".join(rows)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


TABLE_BEGIN = "<!-- parameters: generated from the stage spec by `python -m pipelines compile` -->"
TABLE_END = "<!-- end parameters -->"


def with_table(readme: str, table: str) -> str:
    """``readme`` with the text between the table markers replaced by ``table``.

    ``ValueError`` when the markers are missing (a README must opt in once, by hand).
    """
    begin, end = readme.find(TABLE_BEGIN), readme.find(TABLE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"README has no {TABLE_BEGIN!r} ... {TABLE_END!r} block")
    return readme[: begin + len(TABLE_BEGIN)] + "\n" + table + "\n" + readme[end:]
