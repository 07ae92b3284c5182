"""POS traffic simulator: replay the held-out live stream against the scoring API.

    python -m tools.simulator --url http://127.0.0.1:8000 --rate 20 --max-requests 500
    python -m tools.simulator --lambda-handler --rate 0 --max-requests 200

The live stream (``split`` stage output: JSON Lines, RAW_TRANSACTION fields, ISO timestamps)
is sent transaction by transaction to ``POST /v1/predict`` - over HTTP, or in-process through
the AWS Lambda handler (``serving.lambda_handler.handler``) with API Gateway v2 events - at a
target rate or as fast as possible, from a few worker threads. 5xx answers and connection
errors are retried with exponential backoff. Every run is bounded by a request count and a
wall-clock duration, so the simulator cannot flood a service.

At the end it reports client-side latency percentiles and throughput and, joined with the
held-out labels (``live_labels`` Parquet), the online precision/recall per risk level and the
recall per fraud type: what loss prevention would see from the model on live traffic; with
the labels' cohort dates also per cashier cohort (established, new hires, late turners,
thieves) and the new-hire false-alarm ratio (``cohorts.py``). ``python -m
tools.simulator.compare frozen=A.json live=B.json`` puts two runs side by side (the app with
``PROFILE_STORE=frozen`` and with the live profile store: ``make simulate-cohorts``).

Pure logic (pacing, backoff, percentiles, online quality, the API Gateway event shape, the
report text) is separate from I/O (transports, threads, files) and unit-tested.
"""

from tools.simulator.cli import main
from tools.simulator.inputs import find_latest, latest_live_files, load_labels, load_stream
from tools.simulator.logic import (
    FLAGGED_LEVELS,
    LATENCY_PERCENTILES,
    MAX_CONCURRENCY,
    PREDICT_PATH,
    RequestResult,
    SimulatorConfig,
    SimulatorError,
    api_gateway_v2_event,
    backoff_delay,
    due_offset,
    format_report,
    is_retryable,
    latency_summary,
    online_quality,
    percentiles,
)
from tools.simulator.run import Progress, build_report, run
from tools.simulator.transport import (
    HttpTransport,
    LambdaTransport,
    Transport,
    load_lambda_handler,
)

__all__ = [
    "FLAGGED_LEVELS",
    "LATENCY_PERCENTILES",
    "MAX_CONCURRENCY",
    "PREDICT_PATH",
    "HttpTransport",
    "LambdaTransport",
    "Progress",
    "RequestResult",
    "SimulatorConfig",
    "SimulatorError",
    "Transport",
    "api_gateway_v2_event",
    "backoff_delay",
    "build_report",
    "due_offset",
    "find_latest",
    "format_report",
    "is_retryable",
    "latency_summary",
    "latest_live_files",
    "load_labels",
    "load_lambda_handler",
    "load_stream",
    "main",
    "online_quality",
    "percentiles",
    "run",
]
