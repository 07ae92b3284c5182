"""Bake the registry's champion bundle into a folder (``serving/model/`` by default).

    python -m tools.delivery.bake                       # models:/$MODEL_NAME@$CHAMPION_ALIAS
    python -m tools.delivery.bake --model-uri models:/cashier-integrity-risk/3 --out dist/model

MLflow locations come from the usual settings (``MLFLOW_TRACKING_URI``, ``VAR_DIR``...). The
download is verified against the manifest's sha256 before anything is written, and again
after; a tampered or incompatible bundle exits non-zero with one line naming the file.
The delivery image build copies the result and sets ``MODEL_DIR`` to it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from components.contracts import bundle as bundle_mod
from components.contracts import storage
from components.contracts.bundle import Bundle, BundleError
from pipelines.images import BUNDLE_DIR
from serving.model_loader import ModelLoadError, download_registry_bundle


def bake_bundle(uri: str, out_dir: str | Path) -> Bundle:
    """Download ``uri`` (e.g. ``models:/<name>@champion``), verify it, write it to ``out_dir``.

    The output holds exactly the manifest-listed files, ``manifest.json`` and a
    ``registry.json`` sidecar naming the registry version, so an image built from it serves
    the same bytes that were registered. Verification runs twice: on the download (a
    tampered artifact store is refused) and on the written folder.

    Raises:
        ModelLoadError: Unresolvable URI, failed download, or a bundle that does not verify.
    """
    with tempfile.TemporaryDirectory(prefix="bake-") as tmp:
        folder, facts = download_registry_bundle(uri, tmp)
        try:
            source = bundle_mod.load_bundle(folder)
        except BundleError as exc:
            raise ModelLoadError(f"{uri}: downloaded bundle rejected: {exc}") from exc
        registry = dict(source.registry or {})
        registry |= {k: v for k, v in facts.items() if v is not None}
        with storage.staged_dir(str(out_dir), stage="bake") as staged:
            bundle_mod.copy_verified(
                source,
                staged,
                model_name=str(registry.get("model_name") or source.model_name or "unregistered"),
                model_version=str(
                    registry.get("model_version") or source.model_version or source.sha256[:12]
                ),
                run_id=registry.get("run_id"),
                alias=registry.get("alias"),
            )
    try:
        return bundle_mod.load_bundle(out_dir)
    except BundleError as exc:
        raise ModelLoadError(f"{out_dir}: baked bundle does not verify: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    from components.contracts.settings import Settings

    cfg = Settings.from_env().mlflow
    parser = argparse.ArgumentParser(
        prog="python -m tools.delivery.bake", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model-uri",
        default=f"models:/{cfg.model_name}@{cfg.champion_alias}",
        help="Registry URI of the bundle (default models:/$MODEL_NAME@$CHAMPION_ALIAS).",
    )
    parser.add_argument(
        "--out",
        default=BUNDLE_DIR,
        help="Output folder (replaced atomically; default %(default)s).",
    )
    args = parser.parse_args(argv)
    try:
        bundle = bake_bundle(args.model_uri, args.out)
    except ModelLoadError as exc:
        print(f"bake_bundle: {exc}", file=sys.stderr)
        return 1
    registry = bundle.registry or {}
    print(
        f"baked {registry.get('model_name')} version {registry.get('model_version')} "
        f"from {args.model_uri} -> {bundle.root} (bundle sha256 {bundle.sha256[:12]}, "
        f"{len(bundle.manifest['files'])} files verified)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
