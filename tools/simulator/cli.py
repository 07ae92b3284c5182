"""The simulator CLI (``python -m tools.simulator``): flags, inputs, run, report."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.simulator.cohorts import format_cohort_table, load_cohort_dates
from tools.simulator.inputs import latest_live_files, load_labels, load_stream
from tools.simulator.logic import SimulatorConfig, SimulatorError, format_report
from tools.simulator.run import Progress, build_report, run
from tools.simulator.transport import HttpTransport, LambdaTransport, Transport, load_lambda_handler

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simulate_traffic",
        description="Replay the live POS stream against POST /v1/predict and report latency "
        "and online model quality. Bounded by --max-requests and --duration.",
    )
    p.add_argument(
        "--stream",
        default="latest",
        help="live stream JSON Lines (local path or s3:// URI), or 'latest' for the newest "
        "*live*stream*.jsonl under --search-root (default: latest)",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="live labels Parquet for online precision/recall; with --stream latest the "
        "labels of the same run are found automatically; 'none' disables",
    )
    p.add_argument(
        "--search-root",
        default=None,
        help="folder searched by --stream latest (default: $PIPELINE_ROOT, else $VAR_DIR)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="base URL of the service (default: %(default)s)",
    )
    target.add_argument(
        "--lambda-handler",
        nargs="?",
        const="serving.lambda_handler.handler",
        default=None,
        metavar="MODULE.ATTR",
        help="call this Lambda handler in-process with API Gateway v2 events instead of HTTP "
        "(default handler: serving.lambda_handler.handler)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="target requests/s; 0 = as fast as possible (default: 20)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="worker threads (default: 4)")
    p.add_argument(
        "--max-requests", type=int, default=1000, help="send at most N transactions (default: 1000)"
    )
    p.add_argument(
        "--duration", type=float, default=60.0, help="stop after S seconds (default: 60)"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, help="per-attempt timeout in s (default: 5)"
    )
    p.add_argument(
        "--retries", type=int, default=3, help="retries on 5xx/connection errors (default: 3)"
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=0.05,
        help="first retry delay in s, doubling (default: 0.05)",
    )
    p.add_argument(
        "--api-key", default=os.environ.get("API_KEY"), help="X-API-Key header (default: $API_KEY)"
    )
    p.add_argument(
        "--report", default=None, help="write the JSON report here (local path or s3:// URI)"
    )
    p.add_argument(
        "--alert-score",
        type=float,
        default=None,
        help="also report the cohorts alerting at risk_score >= this (e.g. evaluate's "
        "valid-fixed 1%% FPR threshold, threshold_at_1pct_fpr in blend.json)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _resolve_inputs(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.stream != "latest":
        labels = None if args.labels in (None, "none") else args.labels
        return args.stream, labels
    if args.search_root:
        root = Path(args.search_root)
    else:
        from components.contracts.settings import Settings

        settings = Settings.from_env()
        root = (
            Path(settings.pipeline_root)
            if not settings.pipeline_root.startswith("s3://")
            else settings.home
        )
        if not root.exists():
            root = settings.home
    stream, found_labels = latest_live_files(root)
    if args.labels == "none":
        return str(stream), None
    return str(stream), args.labels or (str(found_labels) if found_labels else None)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m tools.simulator``). Returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpcore"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from components.contracts.schemas import SchemaError
    from components.contracts.storage import StorageError, write_json

    try:
        config = SimulatorConfig(
            rate=None if args.rate == 0 else args.rate,
            concurrency=args.concurrency,
            max_requests=args.max_requests,
            duration_s=args.duration,
            timeout_s=args.timeout,
            max_retries=args.retries,
            backoff_base_s=args.backoff,
            backoff_max_s=max(2.0, args.backoff),
        )
        stream_uri, labels_uri = _resolve_inputs(args)
        transactions = load_stream(stream_uri, limit=config.max_requests)
        labels = load_labels(labels_uri) if labels_uri else None
        cohort_dates = load_cohort_dates(labels_uri) if labels_uri else None
        transport: Transport
        if args.lambda_handler:
            transport = LambdaTransport(
                load_lambda_handler(args.lambda_handler),
                api_key=args.api_key,
                name=args.lambda_handler,
            )
        else:
            transport = HttpTransport(
                args.url,
                api_key=args.api_key,
                timeout_s=config.timeout_s,
                concurrency=config.concurrency,
            )
    except (SimulatorError, SchemaError, StorageError) as exc:
        print(f"simulate_traffic: error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "replaying %d transactions from %s against %s (rate %s, concurrency %d, max %.0fs)",
        min(len(transactions), config.max_requests),
        stream_uri,
        transport.name,
        "max" if config.rate is None else f"{config.rate:g}/s",
        config.concurrency,
        config.duration_s,
    )
    progress = Progress(min(len(transactions), config.max_requests), enabled=not args.no_progress)
    try:
        results, elapsed = run(transactions, transport, config, progress=progress)
    finally:
        transport.close()
    report = build_report(
        transport.name, config, results, elapsed, labels,
        transactions=transactions, cohort_dates=cohort_dates, alert_score=args.alert_score,
    )  # fmt: skip
    report["stream"] = stream_uri
    report["labels"] = labels_uri
    print(format_report(report))
    if report["cohorts"]:
        print("\n" + format_cohort_table({"online": report}))
    if args.report:
        write_json(report, args.report)
        print(f"report: {args.report}")
    if not results:
        print("simulate_traffic: error: no request was sent (duration too short?)", file=sys.stderr)
        return 1
    if not any(r.ok for r in results):
        print("simulate_traffic: error: no request succeeded", file=sys.stderr)
        return 1
    return 0
