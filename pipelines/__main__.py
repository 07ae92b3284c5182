"""``python -m pipelines``: compile, check, run locally, inspect runs, submit to Kubeflow."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from components.contracts.settings import Settings

DEFAULT_YAML = Path(__file__).resolve().parent / "cashier_integrity.yaml"


def _image_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image-registry",
        help="registry prefix of the component images (default: settings IMAGE_REGISTRY)",
    )
    p.add_argument("--image-tag", help="component image tag (default: settings IMAGE_TAG)")


def _images(args, settings: Settings) -> tuple[str, str]:
    return args.image_registry or settings.image_registry, args.image_tag or settings.image_tag


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Compile the cashier-integrity KFP pipeline, run it locally, or submit it to Kubeflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile the pipeline YAML and every component.yaml")
    _image_flags(p)
    p.add_argument(
        "--images",
        metavar="JSON",
        help="per-stage image references written by scripts/build_images.py (var/images.json); "
        "they win over --image-registry/--image-tag",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_YAML,
        help="pipeline YAML path (default: %(default)s)",
    )
    p.add_argument(
        "--task-env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment variable set on every task (e.g. MLFLOW_TRACKING_URI of the cluster)",
    )

    p = sub.add_parser("compile-check", help="exit 1 when the checked-in YAML files are stale")
    _image_flags(p)
    p.add_argument("--output", type=Path, default=DEFAULT_YAML, help="checked-in pipeline YAML")

    p = sub.add_parser("run", help="run a compiled pipeline YAML with the local runner")
    p.add_argument(
        "pipeline",
        nargs="?",
        type=Path,
        default=None,
        help=f"compiled pipeline YAML (default: {DEFAULT_YAML.name})",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter override; repeatable",
    )
    p.add_argument(
        "--pipeline-root",
        help="local folder or s3://bucket/prefix (default: settings PIPELINE_ROOT)",
    )
    p.add_argument(
        "--parallelism",
        type=int,
        default=2,
        help="independent tasks run at once (default: %(default)s)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read the cache (still written)")
    p.add_argument(
        "--rerun-from",
        metavar="TASK",
        help="rerun TASK and everything downstream; upstream from cache",
    )
    p.add_argument(
        "--only", metavar="TASK", help="run only TASK; upstream from cache, downstream skipped"
    )
    p.add_argument(
        "--task-timeout", type=float, metavar="SECONDS", help="kill a task attempt after this long"
    )
    p.add_argument("--resume", metavar="RUN_ID", help="continue a failed or interrupted run")
    p.add_argument(
        "--docker",
        action="store_true",
        help="run each task in the image the YAML names (built by `make images`, never "
        "pulled; needs a Docker engine)",
    )

    sub.add_parser("runs", help="list local runs, newest first")

    p = sub.add_parser("show", help="show one run: tasks, cache, lineage, metrics")
    p.add_argument("run_id", help="run id (a unique prefix is enough)")
    p.add_argument("--json", action="store_true", help="print the raw run record")

    p = sub.add_parser("submit", help="submit the compiled YAML to a Kubeflow Pipelines API")
    p.add_argument(
        "pipeline", nargs="?", type=Path, default=DEFAULT_YAML, help="compiled pipeline YAML"
    )
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument(
        "--experiment", default="cashier-integrity", help="experiment name (default: %(default)s)"
    )
    p.add_argument("--run-name", help="run name")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter; repeatable",
    )
    p.add_argument(
        "--schedule",
        metavar="CRON",
        help="create a recurring run with this cron expression instead",
    )
    p.add_argument("--namespace", help="Kubernetes namespace (multi-user Kubeflow)")
    p.add_argument(
        "--pipeline-root", help="artifact root for the run, e.g. s3://bucket/pipeline-root"
    )
    return parser


def _cmd_compile(args, settings: Settings) -> int:
    from pipelines.compile import compile_all
    from pipelines.placeholders import PlaceholderError
    from pipelines.runner.ir import parse_param_args

    registry, tag = _images(args, settings)
    images = None
    if args.images:
        images = json.loads(Path(args.images).read_text())
        if not isinstance(images, dict) or not all(isinstance(v, str) for v in images.values()):
            raise ValueError(f"{args.images}: expected a JSON object of name -> image reference")
    try:
        written = compile_all(
            registry,
            tag,
            pipeline_yaml=args.output,
            task_env=parse_param_args(args.task_env),
            images=images,
        )
    except PlaceholderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_compile_check(args, settings: Settings) -> int:
    from pipelines.compile import check_fresh
    from pipelines.components import STAGES
    from pipelines.placeholders import PlaceholderError, check_file

    registry, tag = _images(args, settings)
    try:
        check_file(args.output)  # the checked-in YAML, then every fresh compile
        stale = check_fresh(registry, tag, pipeline_yaml=args.output)
    except PlaceholderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not stale:
        print(
            f"compiled YAML and README parameter tables are up to date ({args.output}, "
            f"{len(STAGES)} component.yaml files and {len(STAGES)} stage READMEs)"
        )
        return 0
    for item in stale:
        print(item.diff[:4000], file=sys.stderr)
    names = ", ".join(str(s.path) for s in stale)
    print(
        f"error: stale compiled YAML: {names}; run `make compile` and commit the result",
        file=sys.stderr,
    )
    return 1


def _cmd_run(args, settings: Settings) -> int:
    from pipelines.runner import RunFailed, Runner, RunOptions
    from pipelines.runner.ir import PipelineError, parse_param_args
    from pipelines.runner.summary import run_summary

    try:
        params = parse_param_args(args.param)
        pipeline = args.pipeline
        if pipeline is None and not args.resume:
            pipeline = DEFAULT_YAML
        options = RunOptions(
            params=params,
            pipeline_root=args.pipeline_root,
            parallelism=args.parallelism,
            no_cache=args.no_cache,
            rerun_from=args.rerun_from,
            only=args.only,
            task_timeout=args.task_timeout,
            resume=args.resume,
        )
        backend = None
        if args.docker:
            from pipelines.runner.container import ContainerBackend

            backend = ContainerBackend(settings)
        runner = Runner(settings, backend=backend)
        # `kill <runner>` stops like Ctrl-C: running tasks are killed, the run is resumable.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        rec = runner.run(pipeline, options)
    except (PipelineError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        if exc.record is not None:
            print(
                f"resume with: python -m pipelines run --resume {exc.record.run_id}",
                file=sys.stderr,
            )
        return 1
    except KeyboardInterrupt:
        return 130
    print()
    print(run_summary(rec, settings))
    return 0


def _cmd_runs(args, settings: Settings) -> int:
    from pipelines.runner import record
    from pipelines.runner.summary import runs_table

    print(runs_table(record.list_runs(settings.home)))
    return 0


def _cmd_show(args, settings: Settings) -> int:
    import json

    from pipelines.runner import record
    from pipelines.runner.summary import show

    try:
        rec = record.load(settings.home, args.run_id)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rec.to_dict(), indent=2, default=str) if args.json else show(rec))
    return 0


def _cmd_submit(args, settings: Settings) -> int:
    from pipelines.runner.ir import PipelineError, parse_param_args
    from pipelines.submit import submit

    try:
        run_id = submit(
            args.pipeline,
            host=args.host,
            params=parse_param_args(args.param),
            experiment=args.experiment,
            run_name=args.run_name,
            schedule=args.schedule,
            namespace=args.namespace,
            pipeline_root=args.pipeline_root,
        )
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = "recurring run" if args.schedule else "run"
    print(f"submitted {kind} {run_id} to {args.host}")
    return 0


COMMANDS = {
    "compile": _cmd_compile,
    "compile-check": _cmd_compile_check,
    "run": _cmd_run,
    "runs": _cmd_runs,
    "show": _cmd_show,
    "submit": _cmd_submit,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return COMMANDS[args.command](args, Settings.from_env())


if __name__ == "__main__":
    sys.exit(main())
