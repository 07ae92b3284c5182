"""Record a deployment on the MLflow model version it shipped (run by the deploy workflow).

Sets model version tags ``deploy.image_uri``, ``deploy.image_digest``, ``deploy.target``,
``deploy.endpoint``, ``deploy.git_sha``, ``deploy.run_url`` and ``deploy.deployed_at`` so the
registry answers "which image runs this model, where, since when". The model version comes
from the baked bundle's ``manifest.json`` (``model_name`` / ``model_version``) or, failing
that, from ``--model-name`` + ``--alias`` resolved on the registry.

Usage::

    python -m tools.delivery.record --bundle-dir serving/model \\
        --image-uri <registry>/serving-lambda@sha256:<digest> --target lambda:<stack>
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

TAG_PREFIX = "deploy."


class RecordError(RuntimeError):
    """Bad input; the message is one line naming it."""


def image_digest(image_uri: str) -> str | None:
    """The ``sha256:...`` digest of a digest-pinned reference, else None."""
    _, sep, digest = image_uri.partition("@")
    if not sep:
        return None
    if not digest.startswith("sha256:") or len(digest) != len("sha256:") + 64:
        raise RecordError(f"--image-uri {image_uri!r}: digest must be sha256:<64 hex>")
    return digest


def deployment_tags(
    *,
    image_uri: str,
    target: str,
    endpoint: str | None = None,
    git_sha: str | None = None,
    run_url: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """The tags to set on the model version (pure; empty values are left out)."""
    if not image_uri.strip():
        raise RecordError("--image-uri is empty")
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    values = {
        "image_uri": image_uri,
        "image_digest": image_digest(image_uri),
        "target": target,
        "endpoint": endpoint,
        "git_sha": git_sha,
        "run_url": run_url,
        "deployed_at": stamp,
    }
    return {f"{TAG_PREFIX}{k}": v for k, v in values.items() if v}


def bundle_model(bundle_dir: Path) -> tuple[str | None, str | None]:
    """``(model_name, model_version)`` of a baked bundle (None when unknown).

    The ``registry.json`` sidecar written by ``tools.delivery.bake`` wins over ``manifest.json``.
    """
    from components.contracts import storage

    if (bundle_dir / storage.SUCCESS_MARKER).is_file():  # a published bundle (bake): its version
        try:
            bundle_dir = Path(storage.open_output(str(bundle_dir)).path())
        except storage.StorageError as exc:
            raise RecordError(str(exc)) from exc
    manifest = bundle_dir / "manifest.json"
    if not manifest.is_file():
        raise RecordError(f"{manifest}: bundle manifest not found (bake the bundle first)")
    name = version = None
    for path in (manifest, bundle_dir / "registry.json"):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}: not valid JSON ({exc})") from exc
        name = data.get("model_name") or name
        if data.get("model_version") not in (None, ""):
            version = str(data["model_version"])
    return (str(name) if name else None, version)


def resolve_version(client, name: str, alias: str) -> str:
    """Version number behind ``models:/<name>@<alias>``."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise RecordError(f"models:/{name}@{alias}: cannot resolve ({exc.message})") from exc


def record(client, name: str, version: str, tags: Mapping[str, str]) -> None:
    """Set every tag on the model version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise RecordError(f"model {name} version {version} not in the registry") from exc
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.delivery.record", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--image-uri", required=True, help="deployed image, ideally repo@sha256:..."
    )
    parser.add_argument("--target", required=True, help="where it runs, e.g. lambda:<stack name>")
    parser.add_argument("--bundle-dir", type=Path, help="baked bundle (reads manifest.json)")
    parser.add_argument(
        "--model-name", help="registered model (default: manifest, then MODEL_NAME)"
    )
    parser.add_argument("--model-version", help="model version (default: manifest, then alias)")
    parser.add_argument(
        "--alias", help="alias to resolve when no version is known (CHAMPION_ALIAS)"
    )
    parser.add_argument("--endpoint", help="public URL of the deployment")
    parser.add_argument("--git-sha", help="commit that built the image")
    parser.add_argument("--run-url", help="CI run that deployed it")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI)")
    args = parser.parse_args(argv)

    from components.contracts.settings import Settings

    cfg = Settings.from_env().mlflow
    try:
        name, version = (None, None)
        if args.bundle_dir:
            name, version = bundle_model(args.bundle_dir)
        name = args.model_name or name or cfg.model_name
        version = args.model_version or version
        tags = deployment_tags(image_uri=args.image_uri, target=args.target,
                               endpoint=args.endpoint, git_sha=args.git_sha,
                               run_url=args.run_url)  # fmt: skip
        import mlflow

        uri = args.tracking_uri or cfg.tracking_uri
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        if version is None:
            version = resolve_version(client, name, args.alias or cfg.champion_alias)
        record(client, name, version, tags)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"tagged {name} version {version}: {tags[f'{TAG_PREFIX}image_uri']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
