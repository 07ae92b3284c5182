"""Seed the Redis profile store from a bundle's profile table (idempotent).

Example:
    REDIS_URL=redis://127.0.0.1:6379/0 python -m serving.store seed --model-dir serving/model

Only keys that do not exist are written, so running it again (or against a store already
serving live traffic) changes nothing; keys carry FEATURE_VERSION.
"""

from __future__ import annotations

import argparse
import sys

from components.contracts import bundle as bundle_mod
from components.contracts import features as feats
from components.contracts import storage
from components.contracts.bundle import BundleError
from serving.settings import ServingSettings
from serving.store.base import StoreError, key_prefix


def main(argv: list[str] | None = None) -> int:
    env = ServingSettings.from_env()
    parser = argparse.ArgumentParser(prog="python -m serving.store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed", help="write the bundle's profiles where no key exists yet")
    seed.add_argument("--model-dir", default=env.model_dir, help="bundle folder (MODEL_DIR)")
    seed.add_argument("--redis-url", default=env.redis_url, help="Redis URL (REDIS_URL)")
    seed.add_argument("--namespace", default=env.store_namespace, help="key namespace")
    args = parser.parse_args(argv)
    if not args.model_dir or not args.redis_url:
        print(
            "serving.store: set --model-dir (MODEL_DIR) and --redis-url (REDIS_URL)",
            file=sys.stderr,
        )
        return 2
    from serving.store.redis_store import RedisStore

    try:
        bundle = bundle_mod.load_bundle(args.model_dir)
        table = storage.read_table(
            str(bundle.profiles_path), feats.PROFILE_SCHEMA, require_marker=False
        )
        store = RedisStore(args.redis_url, namespace=args.namespace)
        written = store.seed(feats.ProfileIndex.from_table(table), bundle.sha256)
    except (BundleError, StoreError, OSError) as exc:
        print(f"serving.store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    store.close()
    print(
        f"seeded {written} profile keys under {key_prefix(args.namespace)} "
        f"(bundle {bundle.sha256[:12]}; existing keys kept)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
