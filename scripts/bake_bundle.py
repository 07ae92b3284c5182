"""Bake the registry's champion bundle into a folder (``serving/model/`` by default).

    python scripts/bake_bundle.py                       # models:/$MODEL_NAME@$CHAMPION_ALIAS
    python scripts/bake_bundle.py --model-uri models:/cashier-integrity-risk/3 --out dist/model

MLflow locations come from the usual settings (``MLFLOW_TRACKING_URI``, ``VAR_DIR``...). The
download is verified against the manifest's sha256 before anything is written, and again
after; a tampered or incompatible bundle exits non-zero with one line naming the file.
The delivery image build copies the result and sets ``MODEL_DIR`` to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from components.contracts.settings import Settings

    cfg = Settings.from_env().mlflow
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-uri",
        default=f"models:/{cfg.model_name}@{cfg.champion_alias}",
        help="Registry URI of the bundle (default models:/$MODEL_NAME@$CHAMPION_ALIAS).",
    )
    parser.add_argument(
        "--out",
        default=str(REPO / "serving" / "model"),
        help="Output folder (replaced atomically; default serving/model).",
    )
    args = parser.parse_args(argv)

    from serving.model_loader import ModelLoadError, bake_bundle

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
