"""Dockerfile parsing (pure): instructions, build stages, and the context files a target copies.

Enough of the Dockerfile grammar to derive an image's content tag (``pipelines.images``):
continuation lines, ``ARG`` defaults in ``FROM``, named stages, ``COPY``/``ADD`` sources and
``--from`` copies. No engine, no I/O.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class BuildError(RuntimeError):
    """A build cannot proceed; the message is one line naming the bad input."""


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction after joining continuation lines."""

    keyword: str
    """Upper-case instruction (``FROM``, ``COPY``, ...)."""
    args: str
    """Everything after the keyword."""
    line: int
    """1-based line number where the instruction starts."""


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, ``\\`` continuations joined)."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        joined = " ".join(part for part in buf if part)
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    if buf:
        joined = " ".join(buf)
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


@dataclass(frozen=True)
class CopyInstruction:
    """A ``COPY``/``ADD`` instruction: sources, destination and ``--from`` stage if any."""

    sources: tuple[str, ...]
    dest: str
    from_stage: str | None
    stage: str
    """Name (or index as a string) of the build stage the instruction belongs to."""
    workdir: str
    """WORKDIR in effect (for relative destinations)."""


def _split_copy_args(args: str) -> tuple[dict[str, str], list[str]]:
    words = json.loads(args) if args.lstrip().startswith("[") else shlex.split(args)
    flags: dict[str, str] = {}
    rest: list[str] = []
    for word in words:
        if word.startswith("--") and not rest:
            key, _, value = word[2:].partition("=")
            flags[key] = value
        else:
            rest.append(word)
    return flags, rest


@dataclass(frozen=True)
class Stage:
    """One build stage: name, base (``FROM``), copies, and the runtime settings it declares."""

    name: str
    base: str
    copies: tuple[CopyInstruction, ...]
    cmd: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    user: str | None
    workdir: str | None = None


def _exec_form(args: str) -> tuple[str, ...]:
    if args.lstrip().startswith("["):
        return tuple(json.loads(args))
    return ("/bin/sh", "-c", args)


def dockerfile_stages(text: str) -> list[Stage]:
    """Parse a (multi-stage) Dockerfile into its stages, in order."""
    stages: list[Stage] = []
    name = base = ""
    copies: list[CopyInstruction] = []
    cmd = entrypoint = None
    user = None
    workdir = "/"
    set_workdir: str | None = None

    def close() -> None:
        if base:
            stages.append(Stage(name, base, tuple(copies), cmd, entrypoint, user, set_workdir))

    for ins in parse_dockerfile(text):
        if ins.keyword == "FROM":
            close()
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            # A stage built FROM an earlier stage inherits its settings.
            parent = next((s for s in stages if s.name == base), None)
            copies, cmd, entrypoint = [], None, None
            user = parent.user if parent else None
            set_workdir = parent.workdir if parent else None
            workdir = set_workdir or "/"
        elif ins.keyword in ("COPY", "ADD"):
            flags, words = _split_copy_args(ins.args)
            copies.append(
                CopyInstruction(
                    sources=tuple(words[:-1]),
                    dest=words[-1],
                    from_stage=flags.get("from"),
                    stage=name,
                    workdir=workdir,
                )
            )
        elif ins.keyword == "WORKDIR":
            path = ins.args.strip()
            workdir = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
            set_workdir = workdir
        elif ins.keyword == "CMD":
            cmd = _exec_form(ins.args)
        elif ins.keyword == "ENTRYPOINT":
            entrypoint = _exec_form(ins.args)
        elif ins.keyword == "USER":
            user = ins.args.strip()
    close()
    return stages


def stage_chain(stages: Sequence[Stage], target: str | None) -> list[Stage]:
    """The target stage (default: the last) and every stage it is built from or copies from."""
    by_name = {s.name: s for s in stages}
    if not stages:
        raise BuildError("Dockerfile has no FROM instruction")
    if target is not None and target not in by_name:
        raise BuildError(f"build target {target!r} not in Dockerfile (stages: {sorted(by_name)})")
    todo = [by_name[target] if target else stages[-1]]
    seen: dict[str, Stage] = {}
    while todo:
        stage = todo.pop()
        if stage.name in seen:
            continue
        seen[stage.name] = stage
        deps = [stage.base] + [c.from_stage for c in stage.copies if c.from_stage]
        todo.extend(by_name[d] for d in deps if d in by_name)
    return [s for s in stages if s.name in seen]


def expand_args(word: str, buildargs: Mapping[str, str]) -> str:
    """``${NAME}`` and ``$NAME`` replaced by build arguments (others left as written)."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: buildargs.get(m.group(1) or m.group(2), m.group(0)),
        word,
    )


def copy_sources(
    text: str, target: str | None = None, buildargs: Mapping[str, str] | None = None
) -> list[str]:
    """Build-context sources of every COPY/ADD the target depends on (no ``--from`` copies),
    with ``buildargs`` substituted as the builder does (``COPY components/${STAGE}/ ...``)."""
    sources: list[str] = []
    for stage in stage_chain(dockerfile_stages(text), target):
        for ins in stage.copies:
            if ins.from_stage is None:
                expanded = (expand_args(s, buildargs or {}) for s in ins.sources)
                sources.extend(s for s in expanded if s not in sources)
    return sources
