"""Build (and optionally push) the project's images: the CLI over ``pipelines.images``.

Every tag is the content digest of exactly what goes into the image (pipelines/images.py);
an image whose tag is already present is reused. Prints each image's size and build time
and writes them as JSON with ``--report``.

Usage::

    python -m tools.delivery.images --dry-run            # print the plan, no engine needed
    python -m tools.delivery.images                      # stage-deps, the 7 stages, serving
    python -m tools.delivery.images --only serving --report var/images-report.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines import images
from tools import REPO


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [s.name for s in images.image_specs()]
    parser = argparse.ArgumentParser(
        prog="python -m tools.delivery.images",
        description="Build, tag and push the project's images.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (images, tags, contexts) without a Docker engine",
    )
    parser.add_argument("--push", action="store_true", help="push each image after building it")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="build even when an image with the content tag is present",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=names,
        help=f"build only this image and its bases (repeatable): {', '.join(names)}",
    )
    parser.add_argument("--registry", help="registry prefix (default: IMAGE_REGISTRY setting)")
    parser.add_argument(
        "--python-base",
        default=images.PYTHON_BASE,
        help="OS + Python base image (default: %(default)s)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="write [{name, ref, image_id, size_bytes, seconds, cached}] JSON",
    )
    parser.add_argument("--repo", type=Path, default=REPO, help="build context (repo root)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show build output")
    return parser.parse_args(argv)  # fmt: skip


def default_selection(repo: Path) -> list[str]:
    """Every image buildable here; ``serving`` only once a bundle is baked into serving/model."""
    names = [s.name for s in images.image_specs() if s.local]
    if not (repo / images.BUNDLE_DIR / "manifest.json").is_file():
        names.remove("serving")
    return names


def main(argv: Sequence[str] | None = None, client_factory: Any = None) -> int:
    """CLI entry point; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")  # fmt: skip
    repo = args.repo.resolve()
    try:
        only = args.only or default_selection(repo)
        planned = images.plan_images(repo, args.registry or "", only, args.python_base)
        if args.dry_run:
            print(images.format_plan(planned))
            return 0
        if not args.only and "serving" not in only:
            print(f"serving: skipped, no bundle in {images.BUNDLE_DIR}/ (make bake first)")
        client = images.connect(client_factory)
        results = images.build_all(client, repo, planned, push=args.push, rebuild=args.rebuild)
    except images.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(images.format_results(results))
    if args.report:
        from components.contracts.storage import write_json

        report = {
            r.name: {"ref": r.ref, "id": r.image_id, "digest": r.pushed_digest,
                     "size_bytes": r.size_bytes, "seconds": round(r.seconds, 1),
                     "cached": r.cached}
            for r in results
        }  # fmt: skip
        write_json(report, str(args.report))
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
