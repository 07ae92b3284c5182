"""The project's images: what each is built from, its content-derived tag, and the build.

Layers, bottom up (each built once, reused by everything above it):

1. ``PYTHON_BASE``: Debian bookworm (``debootstrap --variant=minbase``) with Debian's
   python3 3.11 and python3-venv, made locally by ``scripts/base_image.sh`` because no image
   registry can be pulled from here.
2. ``stage-deps`` (``components/deps.Dockerfile``): one venv with every stage's runtime
   dependencies, installed hash-checked from ``components/requirements.txt`` (generated from
   ``components/requirements.in`` constrained by ``requirements.lock``).
3. one image per stage, all from ``components/stage.Dockerfile`` (build argument ``STAGE``;
   target ``register`` adds the serving engine): ``FROM`` stage-deps plus that stage's code;
   a stage rebuild is a few ``COPY`` layers, not a venv.
4. ``serving`` (``serving/Dockerfile`` target ``server``, uvicorn) and ``serving-lambda``
   (target ``lambda``, FROM the AWS Lambda base, which cannot be pulled here).

Every tag is a digest of exactly what goes into the image: the Dockerfile, every ``COPY``
source file (after ``.dockerignore``), the build target and the build arguments, which for
a stage include the stage-deps reference and so its content digest. Same source, same tag,
on any machine and without an engine; a changed file, a new tag. Never ``:latest`` and no
git sha (a commit that does not touch an image keeps its tag, so KFP's cache, which keys on
the image string, stays valid exactly as long as the image is the same). The pipeline compile
names these references (``pipelines.components``), so the checked-in YAML names exactly
what ``make images`` builds from the same source.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.dockerfile import BuildError, copy_sources

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]

PYTHON_BASE = "cashier-integrity/python-base:3.11-bookworm"
"""Local OS + Python base image (``scripts/base_image.sh`` makes it; never pulled)."""

DEPS = "stage-deps"
"""Name of the shared dependency image every stage image is built FROM."""

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

BASE_ARGS = ("PYTHON_BASE", "DEPS_IMAGE")
"""Build arguments that name a base image (checked present before a build)."""

STAGE_DOCKERFILE = "components/stage.Dockerfile"
"""The one Dockerfile of every stage image (``STAGE`` build argument; register adds a target)."""

BUNDLE_DIR = "serving/model"
"""Where ``python -m tools.delivery.bake`` (``make bake``) puts the champion bundle the serving
images copy in."""

TAG_CHARS = 16
"""Hex characters of the content digest used as the tag (64 bits)."""


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: its name, Dockerfile, target and what it is built FROM."""

    name: str
    """Kebab-case image name, also the KFP component/task name for stages (``train-xgb``)."""
    dockerfile: str
    """Dockerfile path relative to the repo root (the build context)."""
    target: str | None = None
    """Multi-stage ``--target``; None builds the Dockerfile's last stage."""
    deps: str | None = None
    """Name of a project image this one is built FROM (passed as ``DEPS_IMAGE``)."""
    stage: str | None = None
    """Stage module the shared stage Dockerfile builds (passed as ``STAGE``)."""
    python_base: bool = False
    """Built FROM ``PYTHON_BASE`` (passed as the ``PYTHON_BASE`` build argument)."""
    local: bool = True
    """Buildable here; False when its base must be pulled (the Lambda image)."""


def stage_name(module: str) -> str:
    """Image (and KFP component) name of a stage module: ``train_xgb`` -> ``train-xgb``."""
    return module.replace("_", "-")


def image_specs() -> tuple[ImageSpec, ...]:
    """Every image of the project in build order (a base before what is built FROM it)."""
    stages = tuple(
        ImageSpec(
            stage_name(m),
            STAGE_DOCKERFILE,
            target="register" if m == "register" else "stage",
            deps=DEPS,
            stage=m,
        )
        for m in STAGE_MODULES
    )
    return (
        ImageSpec(DEPS, "components/deps.Dockerfile", python_base=True),
        *stages,
        ImageSpec("serving", "serving/Dockerfile", "server", python_base=True),
        ImageSpec("serving-lambda", "serving/Dockerfile", "lambda", local=False),
    )


STAGE_IMAGES: tuple[str, ...] = tuple(stage_name(m) for m in STAGE_MODULES)
"""The images the compiled pipeline names, in stage order."""


# ---------------------------------------------------------------- content digest and tags


def read_dockerignore(repo: Path) -> list[str]:
    """Patterns of ``<repo>/.dockerignore`` (empty when there is none)."""
    path = repo / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(
    repo: Path, sources: Iterable[str], ignore: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Files the sources expand to in the build context docker-py sends (``.dockerignore``
    applied by docker-py's own ``exclude_paths``, which prunes ignored folders whole).

    Returns:
        (sorted repo-relative files, sources that matched nothing).
    """
    import fnmatch

    from docker.utils.build import exclude_paths

    sent = {p for p in exclude_paths(str(repo), list(ignore)) if (repo / p).is_file()}
    files: set[str] = set()
    missing: list[str] = []
    for source in sources:
        pattern = source.strip("/") or "."
        if pattern == ".":
            hits = set(sent)
        elif any(ch in pattern for ch in "*?["):
            hits = {f for f in sent if fnmatch.fnmatch(f, pattern)}
        else:
            hits = {f for f in sent if f == pattern or f.startswith(pattern + "/")}
        if not hits:
            missing.append(source)
        files |= hits
    return sorted(files), missing


def content_digest(
    repo: Path, files: Sequence[str], target: str | None, buildargs: Mapping[str, str]
) -> str:
    """sha256 over the build target, the build arguments and (path, content) of every file."""
    h = hashlib.sha256()
    h.update(f"target={target or ''}\n".encode())
    for key in sorted(buildargs):
        h.update(f"arg {key}={buildargs[key]}\n".encode())
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256((repo / rel).read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def image_ref(registry: str, name: str, tag: str) -> str:
    """``<registry>/<name>:<tag>`` (the registry prefix may carry a namespace)."""
    registry = registry.strip().rstrip("/")
    if not registry:
        raise BuildError("IMAGE_REGISTRY is empty: set it to e.g. ghcr.io/<org>")
    return f"{registry}/{name}:{tag}"


@dataclass(frozen=True)
class PlannedImage:
    """An image with its resolved inputs, tag and full reference."""

    spec: ImageSpec
    files: tuple[str, ...]
    """Repo-relative files that go into the image (Dockerfile first)."""
    buildargs: Mapping[str, str]
    """Build arguments (base image references)."""
    digest: str
    """sha256 (hex) over ``files`` contents, the build target and ``buildargs``."""
    ref: str
    missing: tuple[str, ...] = ()
    """COPY sources that do not exist yet (e.g. the serving bundle before baking)."""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.ref.rpartition(":")[2]


def plan_images(
    repo: Path = REPO,
    registry: str = "",
    only: Iterable[str] | None = None,
    python_base: str = PYTHON_BASE,
) -> list[PlannedImage]:
    """Resolve every image's files, build arguments, digest and reference (no engine).

    ``only`` selects images by name; the images they are built FROM are always planned too
    (their references are part of the selected images' digests) and come first.
    """
    from components.contracts.settings import Settings

    registry = registry or Settings.from_env().image_registry
    specs = {s.name: s for s in image_specs()}
    wanted = list(only or [])
    unknown = sorted(set(wanted) - set(specs))
    if unknown:
        raise BuildError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    selected = set(wanted or specs)
    selected |= {specs[n].deps for n in list(selected) if specs[n].deps}
    ignore = read_dockerignore(repo)
    refs: dict[str, str] = {}
    planned: list[PlannedImage] = []
    for spec in specs.values():
        if spec.name not in selected:
            continue
        dockerfile = repo / spec.dockerfile
        if not dockerfile.is_file():
            raise BuildError(f"{spec.dockerfile}: Dockerfile not found")
        buildargs: dict[str, str] = {}
        if spec.python_base:
            buildargs["PYTHON_BASE"] = python_base
        if spec.deps:
            buildargs["DEPS_IMAGE"] = refs[spec.deps]
        if spec.stage:
            buildargs["STAGE"] = spec.stage
        sources = copy_sources(dockerfile.read_text(), spec.target, buildargs)
        files, missing = context_files(repo, sources, ignore)
        files = [spec.dockerfile, *(f for f in files if f != spec.dockerfile)]
        digest = content_digest(repo, files, spec.target, buildargs)
        ref = image_ref(registry, spec.name, digest[:TAG_CHARS])
        refs[spec.name] = ref
        labels = {
            "org.opencontainers.image.title": f"cashier-integrity-{spec.name}",
            "io.cashier-integrity.content-digest": f"sha256:{digest}",
        }
        planned.append(
            PlannedImage(spec, tuple(files), buildargs, digest, ref, tuple(missing), labels)
        )
    return planned


def image_refs(registry: str = "", repo: Path = REPO) -> dict[str, str]:
    """``{stage image name: reference}`` for the seven stages, as ``make images`` tags them."""
    planned = plan_images(repo, registry, STAGE_IMAGES)
    return {p.spec.name: p.ref for p in planned if p.spec.name in STAGE_IMAGES}


def format_plan(planned: Sequence[PlannedImage]) -> str:
    """Human-readable plan: one line per image, then its build command and context."""
    lines = []
    for p in planned:
        target = f" --target {p.spec.target}" if p.spec.target else ""
        args = "".join(f" --build-arg {k}={v}" for k, v in p.buildargs.items())
        lines.append(f"{p.spec.name}: {p.ref}")
        lines.append(f"  docker build -f {p.spec.dockerfile}{target}{args} -t {p.ref} .")
        lines.append(f"  context: {len(p.files)} files, digest sha256:{p.digest}")
        if not p.spec.local:
            lines.append("  NOT BUILDABLE HERE: its base image must be pulled")
        for source in p.missing:
            lines.append(f"  MISSING COPY source: {source}")
    return "\n".join(lines)


# ---------------------------------------------------------------- Docker engine (I/O)


def connect(client_factory: Any = None, timeout: int = 600) -> Any:
    """Return a Docker client whose engine answered a ping.

    Raises:
        BuildError: no engine answers (one line, naming ``DOCKER_HOST``).
    """
    import os

    import docker
    from docker.errors import DockerException

    factory = client_factory or (lambda: docker.from_env(timeout=timeout))
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = factory()
        client.ping()
    except (DockerException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BuildError(f"no Docker engine answers at DOCKER_HOST={host}: {first}") from exc
    return client


def image_present(client: Any, ref: str) -> bool:
    """True when the engine has an image tagged ``ref`` (never pulls)."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
    except ImageNotFound:
        return False
    return True


def build_image(client: Any, repo: Path, image: PlannedImage, *, network: str | None = "host",
                pull: bool = False) -> str:  # fmt: skip
    """Build one image from the repo-root context and tag it; returns the image id.

    ``network="host"``: a build reaches the package index only through the host's network
    on the machines here (no bridge egress).
    """
    from docker.errors import APIError
    from docker.errors import BuildError as DockerBuildError

    if image.missing:
        hint = (
            " (run make bake first: python -m tools.delivery.bake)"
            if BUNDLE_DIR in " ".join(image.missing)
            else ""
        )
        raise BuildError(
            f"{image.spec.name}: COPY source(s) missing: {', '.join(image.missing)}{hint}"
        )
    for key, base in image.buildargs.items():
        if key not in BASE_ARGS:
            continue
        if not image_present(client, base):
            make = "scripts/base_image.sh" if key == "PYTHON_BASE" else "make images"
            raise BuildError(f"{image.spec.name}: base image {base} not present (run {make})")
    log.info("building %s", image.ref)
    try:
        built, logs = client.images.build(
            path=str(repo),
            dockerfile=image.spec.dockerfile,
            target=image.spec.target,
            tag=image.ref,
            buildargs=dict(image.buildargs),
            labels=dict(image.labels),
            network_mode=network,
            pull=pull,
            rm=True,
            forcerm=True,
        )
    except DockerBuildError as exc:
        tail = [c.get("stream", "").rstrip() for c in exc.build_log if isinstance(c, dict)]
        last = next((line for line in reversed(tail) if line), "")
        raise BuildError(f"{image.spec.name}: docker build failed: {exc.msg} {last}") from exc
    except APIError as exc:
        raise BuildError(f"{image.spec.name}: docker build failed: {exc.explanation}") from exc
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


@dataclass(frozen=True)
class Built:
    """What happened to one image in ``build_all``."""

    name: str
    ref: str
    image_id: str
    size_bytes: int
    seconds: float
    """Build wall time; 0.0 when the image was already present (same content tag)."""
    cached: bool
    pushed_digest: str | None = None


def build_all(
    client: Any,
    repo: Path,
    planned: Sequence[PlannedImage],
    *,
    push: bool = False,
    rebuild: bool = False,
    network: str | None = "host",
) -> list[Built]:
    """Build each planned image unless an image with its content tag already exists.

    A present tag is the same content (the tag is its digest), so it is reused unless
    ``rebuild``; images whose base cannot be pulled here (``spec.local`` False) are built only
    when asked for explicitly by the caller's plan.
    """
    import time

    results: list[Built] = []
    for image in planned:
        start = time.monotonic()
        cached = not rebuild and image_present(client, image.ref)
        if not cached:
            build_image(client, repo, image, network=network)
        elapsed = 0.0 if cached else time.monotonic() - start
        found = client.images.get(image.ref)
        digest = push_image(client, image.ref) if push else None
        results.append(
            Built(image.spec.name, image.ref, found.id, int(found.attrs.get("Size", 0)),
                  elapsed, cached, digest)
        )  # fmt: skip
    return results


def format_results(results: Sequence[Built]) -> str:
    """One line per image: reference, size, build time (or reused)."""
    lines = []
    for r in results:
        how = "reused (same content tag)" if r.cached else f"built in {r.seconds:.0f} s"
        pushed = f", pushed {r.pushed_digest}" if r.pushed_digest else ""
        lines.append(f"{r.name:15} {r.size_bytes / 1e6:7.0f} MB  {how}{pushed}  {r.ref}")
    return "\n".join(lines)
