"""Build, tag and optionally push every image of the project with the Docker SDK.

Images: one per pipeline stage (``components/<stage>/Dockerfile``) and two serving targets
(``serving/Dockerfile``: ``lambda`` for AWS Lambda, ``server`` for uvicorn on ECS/K8s). The
build context of every image is the repository root (``.dockerignore`` keeps it small).

Each image is tagged ``<short git sha>-<content digest>``, where the content digest is the
sha256 of exactly the files that go into the image (its Dockerfile and every ``COPY``
source, filtered by ``.dockerignore``) plus the build target, so an image's tag changes
when, and only when, what is in it changes (or the commit does). The registry prefix comes
from settings (``IMAGE_REGISTRY``). After a build the image references are written to
``<VAR_DIR>/images.json`` (``{"datagen": "<registry>/datagen:<tag>", ...}``), which the
pipeline compile step reads so the compiled YAML names exactly the images just built.

Usage::

    python scripts/build_images.py --dry-run            # print the plan, no engine needed
    python scripts/build_images.py                      # build all images
    python scripts/build_images.py --only serving-lambda --push
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from any cwd
    sys.path.insert(0, str(REPO))

log = logging.getLogger("build_images")

STAGE_MODULES: tuple[str, ...] = (
    "datagen",
    "split",
    "features",
    "train_xgb",
    "train_iforest",
    "evaluate",
    "register",
)
"""Stage folders under ``components/``; the image name is the kebab-case form."""

BUNDLE_DIR = "serving/model"
"""Where ``scripts/bake_bundle.py`` puts the champion bundle the serving images copy in."""


class BuildError(RuntimeError):
    """A build cannot proceed; the message is one line naming the bad input."""


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: its name, Dockerfile and (multi-stage) target."""

    name: str
    """Kebab-case image name, also the component/key in ``images.json`` (``train-xgb``)."""
    dockerfile: str
    """Dockerfile path relative to the repo root (the build context)."""
    target: str | None = None
    """Multi-stage ``--target``; None builds the Dockerfile's last stage."""


@dataclass(frozen=True)
class PlannedImage:
    """An image with its resolved inputs, tag and full reference."""

    spec: ImageSpec
    files: tuple[str, ...]
    """Repo-relative files that go into the image (Dockerfile first)."""
    digest: str
    """sha256 (hex) over ``files`` contents and the build target."""
    tag: str
    ref: str
    missing: tuple[str, ...] = ()
    """COPY sources that do not exist yet (e.g. the serving bundle before baking)."""


def image_specs() -> tuple[ImageSpec, ...]:
    """Every image of the project, stages first, in build order."""
    stages = tuple(
        ImageSpec(m.replace("_", "-"), f"components/{m}/Dockerfile") for m in STAGE_MODULES
    )
    return (
        *stages,
        ImageSpec("serving-lambda", "serving/Dockerfile", "lambda"),
        ImageSpec("serving", "serving/Dockerfile", "server"),
    )


# ---------------------------------------------------------------- Dockerfile parsing (pure)


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
    """One build stage: name, base (``FROM``) and the stages it copies from."""

    name: str
    base: str
    copies: tuple[CopyInstruction, ...]
    cmd: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    user: str | None


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

    def close() -> None:
        if base:
            stages.append(Stage(name, base, tuple(copies), cmd, entrypoint, user))

    for ins in parse_dockerfile(text):
        if ins.keyword == "FROM":
            close()
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            # A stage built FROM an earlier stage inherits its settings.
            parent = next((s for s in stages if s.name == base), None)
            copies, cmd, entrypoint = [], None, None
            user = parent.user if parent else None
            workdir = "/"
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


def copy_sources(text: str, target: str | None = None) -> list[str]:
    """Build-context sources of every COPY/ADD the target depends on (no ``--from`` copies)."""
    sources: list[str] = []
    for stage in stage_chain(dockerfile_stages(text), target):
        for ins in stage.copies:
            if ins.from_stage is None:
                sources.extend(s for s in ins.sources if s not in sources)
    return sources


# ---------------------------------------------------------------- content digest and tags


def read_dockerignore(repo: Path) -> list[str]:
    """Patterns of ``<repo>/.dockerignore`` (empty when there is none)."""
    path = repo / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(matcher: Any, relpath: str) -> bool:
    return bool(matcher.matches(relpath))


def context_files(
    repo: Path, sources: Iterable[str], ignore: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Files the sources expand to in the build context, minus ``.dockerignore`` matches.

    Returns:
        (sorted repo-relative files, sources that matched nothing).
    """
    from docker.utils.build import PatternMatcher

    matcher = PatternMatcher(list(ignore))
    files: set[str] = set()
    missing: list[str] = []
    for source in sources:
        pattern = source.strip("/") or "."
        if any(ch in pattern for ch in "*?["):
            hits = [p for p in repo.glob(pattern)]
        else:
            hits = [repo / pattern] if (repo / pattern).exists() else []
        found = False
        for hit in hits:
            candidates = (
                [hit] if hit.is_file() else sorted(p for p in hit.rglob("*") if p.is_file())
            )
            for path in candidates:
                rel = path.relative_to(repo).as_posix()
                if not _ignored(matcher, rel):
                    files.add(rel)
                    found = True
        if not found:
            missing.append(source)
    return sorted(files), missing


def content_digest(repo: Path, files: Sequence[str], target: str | None) -> str:
    """sha256 over (path, content) of every file, in order, and the build target."""
    h = hashlib.sha256()
    h.update(f"target={target or ''}\n".encode())
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256((repo / rel).read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def image_tag(git_sha: str, digest: str, digest_chars: int = 12) -> str:
    """``<short git sha>-<first digest_chars of the content digest>``."""
    return f"{git_sha}-{digest[:digest_chars]}"


def image_ref(registry: str, name: str, tag: str) -> str:
    """``<registry>/<name>:<tag>`` (the registry prefix may carry a namespace)."""
    registry = registry.strip().rstrip("/")
    if not registry:
        raise BuildError("IMAGE_REGISTRY is empty: set it to e.g. ghcr.io/<org>")
    return f"{registry}/{name}:{tag}"


def plan_images(
    repo: Path, registry: str, git_sha: str, only: Iterable[str] | None = None
) -> list[PlannedImage]:
    """Resolve every image's files, digest, tag and reference (reads files, no engine)."""
    specs = image_specs()
    wanted = list(only or [])
    unknown = sorted(set(wanted) - {s.name for s in specs})
    if unknown:
        raise BuildError(
            f"unknown image(s) {', '.join(unknown)}; known: {', '.join(s.name for s in specs)}"
        )
    ignore = read_dockerignore(repo)
    planned: list[PlannedImage] = []
    for spec in specs:
        if wanted and spec.name not in wanted:
            continue
        dockerfile = repo / spec.dockerfile
        if not dockerfile.is_file():
            raise BuildError(f"{spec.dockerfile}: Dockerfile not found")
        sources = copy_sources(dockerfile.read_text(), spec.target)
        files, missing = context_files(repo, sources, ignore)
        files = [spec.dockerfile, *(f for f in files if f != spec.dockerfile)]
        digest = content_digest(repo, files, spec.target)
        tag = image_tag(git_sha, digest)
        planned.append(
            PlannedImage(spec, tuple(files), digest, tag, image_ref(registry, spec.name, tag),
                         tuple(missing))
        )  # fmt: skip
    return planned


def git_short_sha(repo: Path) -> str:
    """Short sha of HEAD; ``GIT_SHA`` (e.g. ``GITHUB_SHA`` in CI) wins when set."""
    env_sha = os.environ.get("GIT_SHA") or os.environ.get("GITHUB_SHA")
    if env_sha:
        return env_sha[:7]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"{repo}: cannot read the git commit (set GIT_SHA): {exc}") from exc
    return out.stdout.strip()


def format_plan(planned: Sequence[PlannedImage]) -> str:
    """Human-readable plan: one line per image, then its context files."""
    lines = []
    for p in planned:
        target = f" --target {p.spec.target}" if p.spec.target else ""
        lines.append(f"{p.spec.name}: {p.ref}")
        lines.append(f"  docker build -f {p.spec.dockerfile}{target} -t {p.ref} .")
        lines.append(f"  context: {len(p.files)} files, digest sha256:{p.digest}")
        for source in p.missing:
            lines.append(f"  MISSING COPY source: {source}")
    return "\n".join(lines)


# ---------------------------------------------------------------- Docker engine (I/O)


def connect(client_factory: Any = None) -> Any:
    """Return a Docker client whose engine answered a ping.

    Raises:
        BuildError: no engine answers (one line, naming ``DOCKER_HOST``).
    """
    import docker
    from docker.errors import DockerException

    factory = client_factory or docker.from_env
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = factory()
        client.ping()
    except (DockerException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BuildError(f"no Docker engine answers at DOCKER_HOST={host}: {first}") from exc
    return client


def build_image(client: Any, repo: Path, image: PlannedImage, *, labels: Mapping[str, str],
                pull: bool = False) -> str:  # fmt: skip
    """Build one image from the repo-root context and tag it; returns the image id."""
    from docker.errors import BuildError as DockerBuildError

    if image.missing:
        raise BuildError(
            f"{image.spec.name}: COPY source(s) missing: {', '.join(image.missing)}"
            + (
                " (run scripts/bake_bundle.py first)"
                if BUNDLE_DIR in " ".join(image.missing)
                else ""
            )
        )
    log.info("building %s", image.ref)
    try:
        built, logs = client.images.build(
            path=str(repo),
            dockerfile=image.spec.dockerfile,
            target=image.spec.target,
            tag=image.ref,
            labels=dict(labels),
            pull=pull,
            rm=True,
            forcerm=True,
        )
    except DockerBuildError as exc:
        raise BuildError(f"{image.spec.name}: docker build failed: {exc.msg}") from exc
    for chunk in logs:
        if isinstance(chunk, dict) and chunk.get("stream"):
            log.debug("%s", chunk["stream"].rstrip())
    return built.id


def push_image(client: Any, ref: str) -> str | None:
    """Push ``ref``; returns the pushed manifest digest (``sha256:...``) when reported."""
    repository, _, tag = ref.rpartition(":")
    digest = None
    for event in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise BuildError(f"push {ref} failed: {event['error']}")
        aux = event.get("aux") or {}
        digest = aux.get("Digest", digest)
    log.info("pushed %s %s", ref, digest or "")
    return digest


def write_image_map(planned: Sequence[PlannedImage], path: Path) -> dict[str, str]:
    """Write ``{image name: image ref}`` atomically as JSON and return it."""
    from components.contracts.storage import write_json

    mapping = {p.spec.name: p.ref for p in planned}
    if path.exists():  # keep entries of images not rebuilt this time (--only)
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if isinstance(previous, dict):
            mapping = {**{k: v for k, v in previous.items() if isinstance(v, str)}, **mapping}
    write_json(mapping, str(path))
    return mapping


def build_all(
    client: Any,
    repo: Path,
    planned: Sequence[PlannedImage],
    *,
    git_sha: str,
    push: bool = False,
    pull: bool = False,
) -> dict[str, dict[str, str | None]]:
    """Build (and optionally push) each planned image; returns {name: {ref, id, digest}}."""
    results: dict[str, dict[str, str | None]] = {}
    for image in planned:
        labels = {
            "org.opencontainers.image.revision": git_sha,
            "org.opencontainers.image.title": f"cashier-integrity-{image.spec.name}",
            "io.cashier-integrity.content-digest": f"sha256:{image.digest}",
        }
        image_id = build_image(client, repo, image, labels=labels, pull=pull)
        digest = push_image(client, image.ref) if push else None
        results[image.spec.name] = {"ref": image.ref, "id": image_id, "digest": digest}
    return results


# ---------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [s.name for s in image_specs()]
    parser = argparse.ArgumentParser(
        prog="build_images.py",
        description="Build, tag and push the project's images with the Docker SDK.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (images, tags, contexts) without a Docker engine",
    )
    parser.add_argument("--push", action="store_true", help="push each image after building it")
    parser.add_argument("--pull", action="store_true", help="always pull newer base images")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=names,
        help=f"build only this image (repeatable): {', '.join(names)}",
    )
    parser.add_argument("--registry", help="registry prefix (default: IMAGE_REGISTRY setting)")
    parser.add_argument("--git-sha", help="commit id for the tag (default: GIT_SHA or git HEAD)")
    parser.add_argument(
        "--images-json",
        type=Path,
        help="where to write {name: image ref} (default: <VAR_DIR>/images.json)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="also write {name: {ref, id, digest}} JSON here (digest when pushed)",
    )
    parser.add_argument("--repo", type=Path, default=REPO, help="build context (repo root)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show build output")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: Sequence[str] | None = None, client_factory: Any = None) -> int:
    """CLI entry point; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")  # fmt: skip
    from components.contracts.settings import Settings

    settings = Settings.from_env()
    repo = args.repo.resolve()
    try:
        git_sha = (args.git_sha or git_short_sha(repo))[:7]
        registry = args.registry or settings.image_registry
        planned = plan_images(repo, registry, git_sha, args.only)
        images_json = args.images_json or settings.home / "images.json"
        if args.dry_run:
            print(format_plan(planned))
            print(f"would write {images_json}")
            return 0
        client = connect(client_factory)
        results = build_all(client, repo, planned, git_sha=git_sha, push=args.push,
                            pull=args.pull)  # fmt: skip
        write_image_map(planned, images_json)
        if args.report:
            from components.contracts.storage import write_json

            write_json(results, str(args.report))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, result in results.items():
        pushed = f" pushed {result['digest']}" if result["digest"] else ""
        print(f"{name}: {result['ref']}{pushed}")
    print(f"wrote {images_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
