"""Unit tests for the traffic simulator's pure logic and its bounded run loop.

The run loop is exercised with in-process transports (plain Python classes standing in for
the service) so pacing, retries and bounds are checked without a network.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts import storage
from components.contracts.schemas import LIVE_LABELS, RAW_TRANSACTION, RISK_LEVELS
from tools import simulator as sim
from tools.simulator import RequestResult, SimulatorConfig, SimulatorError


def _result(i, level, status=200, latency=0.01, tid=None, attempts=1):
    return RequestResult(
        i, tid or f"T{i}", status, latency, attempts, level, 50.0 if level else None
    )


# ---------------------------------------------------------------- pacing and backoff


def test_due_offsets_are_evenly_spaced_at_the_target_rate():
    assert [sim.due_offset(i, 4.0) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_as_fast_as_possible_has_no_delay():
    assert sim.due_offset(10_000, None) == 0.0


def test_backoff_doubles_and_is_capped():
    delays = [sim.backoff_delay(k, 0.1, 0.5) for k in range(1, 6)]
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    with pytest.raises(ValueError, match="starts at 1"):
        sim.backoff_delay(0, 0.1, 0.5)


@pytest.mark.parametrize(
    ("status", "retry"),
    [(None, True), (500, True), (503, True), (200, False), (404, False), (422, False)],
)
def test_only_server_and_connection_errors_are_retried(status, retry):
    assert sim.is_retryable(status) is retry


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1000}, "concurrency"),
        ({"max_requests": 0}, "max_requests"),
        ({"duration_s": float("inf")}, "duration"),
        ({"duration_s": 0}, "duration"),
        ({"max_retries": -1}, "retries"),
        ({"backoff_base_s": 3.0, "backoff_max_s": 1.0}, "backoff"),
    ],
)
def test_unbounded_or_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(SimulatorError, match=message):
        SimulatorConfig(**kwargs)


# ---------------------------------------------------------------- statistics


def test_percentiles_match_linear_interpolation():
    values = list(range(1, 101))  # 1..100
    got = sim.percentiles(values, (50, 95, 99))
    assert got == {
        "p50": pytest.approx(50.5),
        "p95": pytest.approx(95.05),
        "p99": pytest.approx(99.01),
    }
    assert sim.percentiles([], (50,)) == {"p50": None}


def test_latency_summary_counts_successes_failures_and_retries():
    results = [
        _result(0, "Low Risk", latency=0.010),
        _result(1, "High Risk", latency=0.030, attempts=3),
        _result(2, None, status=503, attempts=4),
        _result(3, None, status=None, attempts=4),
        _result(4, None, status=422),
    ]
    s = sim.latency_summary(results, elapsed_s=2.0)
    assert (s["requests"], s["succeeded"], s["failed"], s["retries"]) == (5, 2, 3, 8)
    assert s["status_counts"] == {"200": 2, "422": 1, "503": 1, "error": 1}
    assert s["throughput_rps"] == 1.0
    assert s["latency_ms"]["p50"] == pytest.approx(20.0)
    assert s["latency_ms"]["max"] == pytest.approx(30.0)


def test_online_quality_precision_recall_per_level_and_fraud_type():
    labels = {
        "T0": (False, "none"),
        "T1": (False, "none"),
        "T2": (False, "none"),
        "T3": (True, "void_abuse"),
        "T4": (True, "void_abuse"),
        "T5": (True, "sweethearting"),
        "T6": (False, "none"),
    }
    results = [
        _result(0, "Low Risk"),
        _result(1, "Low Risk"),
        _result(2, "Medium Risk"),  # false positive at Medium+
        _result(3, "High Risk"),
        _result(4, "Medium Risk"),
        _result(5, "Low Risk"),  # missed sweethearting
        _result(6, None, status=503),  # failed: not counted
        _result(7, "High Risk", tid="T-unknown"),  # no label
    ]
    q = sim.online_quality(results, labels)
    assert (q["matched"], q["unlabelled"], q["frauds"]) == (6, 1, 3)
    assert q["per_level"]["Low Risk"] == {
        "transactions": 3,
        "frauds": 1,
        "precision": pytest.approx(1 / 3),
    }
    assert q["per_level"]["High Risk"] == {"transactions": 1, "frauds": 1, "precision": 1.0}
    med = q["at_or_above"]["Medium Risk"]
    assert (med["flagged"], med["tp"], med["fp"], med["fn"]) == (3, 2, 1, 1)
    assert med["precision"] == pytest.approx(2 / 3) and med["recall"] == pytest.approx(2 / 3)
    high = q["at_or_above"]["High Risk"]
    assert (high["precision"], high["recall"]) == (1.0, pytest.approx(1 / 3))
    assert list(q["per_fraud_type"]) == ["none", "sweethearting", "void_abuse"]
    assert q["per_fraud_type"]["void_abuse"] == {
        "transactions": 2,
        "flagged_medium_plus": 1.0,
        "flagged_high": 0.5,
    }
    assert q["per_fraud_type"]["none"]["flagged_medium_plus"] == pytest.approx(1 / 3)


def test_online_quality_rejects_an_unknown_risk_level():
    with pytest.raises(SimulatorError, match="Extreme"):
        sim.online_quality([_result(0, "Extreme")], {"T0": (True, "void_abuse")})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(RISK_LEVELS), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
def test_lowering_the_alert_level_never_loses_recall(rows):
    results = [_result(i, level) for i, (level, _) in enumerate(rows)]
    labels = {
        f"T{i}": (fraud, "void_abuse" if fraud else "none") for i, (_, fraud) in enumerate(rows)
    }
    q = sim.online_quality(results, labels)
    med, high = q["at_or_above"]["Medium Risk"], q["at_or_above"]["High Risk"]
    assert med["flagged"] >= high["flagged"]
    if q["frauds"]:
        assert med["recall"] >= high["recall"]
    assert sum(v["transactions"] for v in q["per_level"].values()) == len(rows)


def test_report_text_names_the_numbers_an_operator_needs():
    results = [_result(0, "High Risk", latency=0.004), _result(1, "Low Risk", latency=0.006)]
    labels = {"T0": (True, "refund_fraud"), "T1": (False, "none")}
    report = sim.build_report("http://x/v1/predict", SimulatorConfig(), results, 1.0, labels)
    text = sim.format_report(report)
    assert "throughput: 2.0 req/s" in text
    assert "p95=" in text and "refund_fraud" in text
    assert "High Risk+" in text and "100.0%" in text
    json.dumps(report)  # the report is JSON-serialisable


# ---------------------------------------------------------------- API Gateway v2 event


def test_api_gateway_v2_event_is_accepted_by_mangum():
    """A real Litestar app behind Mangum answers the simulator's event like API Gateway would."""
    from litestar import Litestar, post
    from mangum import Mangum

    @post("/v1/predict", status_code=200)
    async def predict(data: dict) -> dict:
        return {"echo": data["transaction_id"]}

    handler = Mangum(Litestar([predict]), lifespan="off")
    transport = sim.LambdaTransport(handler, api_key="k")
    status, payload = transport.send(json.dumps({"transaction_id": "T9"}).encode())
    assert (status, payload) == (200, {"echo": "T9"})
    # From worker threads too (each needs its own event loop for Mangum).
    config = SimulatorConfig(rate=None, concurrency=3, max_requests=6)
    results, _ = sim.run(_txs(6), transport, config)
    assert [r.status for r in results] == [200] * 6
    event = sim.api_gateway_v2_event(b"{}", headers={"X-API-Key": "k"})
    assert event["version"] == "2.0" and event["requestContext"]["http"]["method"] == "POST"
    assert event["headers"]["x-api-key"] == "k" and event["rawPath"] == "/v1/predict"


def test_lambda_transport_turns_a_handler_exception_into_a_500():
    def broken(event, context):
        raise RuntimeError("boom")

    status, payload = sim.LambdaTransport(broken, api_key=None).send(b"{}")
    assert status == 500 and "boom" in payload["error"]


# ---------------------------------------------------------------- the bounded run loop


class FakeService:
    """In-process stand-in for the API: scripted statuses per transaction, records calls."""

    name = "fake"
    connection_errors = (ConnectionError,)

    def __init__(self, script=None, delay=0.0):
        self.script = script or {}
        self.delay = delay
        self.calls: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def send(self, body):
        tx = json.loads(body)
        tid = tx["transaction_id"]
        with self.lock:
            self.calls.append((time.monotonic(), tid))
            plan = self.script.get(tid, [])
            outcome = plan.pop(0) if plan else 200
        if self.delay:
            time.sleep(self.delay)
        if outcome == "conn":
            raise ConnectionError("refused")
        if outcome != 200:
            return outcome, {"detail": "nope"}
        return 200, {"transaction_id": tid, "risk_level": "Low Risk", "risk_score": 3.0}

    def close(self):
        pass


def _txs(n):
    return [{"transaction_id": f"T{i}", "cashier_id": "C1"} for i in range(n)]


def test_run_paces_requests_at_the_target_rate():
    service = FakeService()
    config = SimulatorConfig(rate=100.0, concurrency=4, max_requests=30, duration_s=10)
    results, elapsed = sim.run(_txs(50), service, config)
    assert len(results) == 30 and all(r.ok for r in results)
    # 30 requests at 100/s: the last one is due at 0.29 s.
    assert 0.28 <= elapsed < 2.0
    starts = sorted(t for t, _ in service.calls)
    assert starts[-1] - starts[0] >= 0.28


def test_run_stops_at_the_duration_bound():
    service = FakeService()
    config = SimulatorConfig(rate=20.0, concurrency=2, max_requests=1000, duration_s=0.3)
    results, elapsed = sim.run(_txs(1000), service, config)
    # Due times 0, 0.05, ..., 0.25 fall inside the 0.3 s window: at most 6 requests (fewer
    # only if the machine is so busy that a worker wakes after the deadline).
    assert 3 <= len(results) <= 6
    assert elapsed < 1.0


def test_run_stops_at_the_request_bound_as_fast_as_possible():
    service = FakeService()
    config = SimulatorConfig(rate=None, concurrency=8, max_requests=25, duration_s=10)
    results, _ = sim.run(_txs(100), service, config)
    assert len(service.calls) == 25 == len(results)
    assert [r.index for r in results] == list(range(25))


def test_run_retries_5xx_and_connection_errors_but_not_4xx():
    service = FakeService(script={"T0": [503, "conn", 200], "T1": [422], "T2": [500] * 10})
    config = SimulatorConfig(
        rate=None,
        concurrency=1,
        max_requests=3,
        duration_s=10,
        max_retries=3,
        backoff_base_s=0.001,
        backoff_max_s=0.004,
    )
    results, _ = sim.run(_txs(3), service, config)
    by_id = {r.transaction_id: r for r in results}
    assert by_id["T0"].ok and by_id["T0"].attempts == 3
    assert by_id["T1"].status == 422 and by_id["T1"].attempts == 1 and "nope" in by_id["T1"].error
    assert by_id["T2"].status == 500 and by_id["T2"].attempts == 4  # 1 try + 3 retries


def test_run_records_a_client_side_crash_without_retrying():
    class Broken(FakeService):
        def send(self, body):
            self.calls.append((time.monotonic(), "x"))
            raise TypeError("bad payload")

    service = Broken()
    results, _ = sim.run(
        _txs(2), service, SimulatorConfig(rate=None, concurrency=1, max_requests=2)
    )
    assert len(service.calls) == 2
    assert all(r.status is None and "TypeError" in r.error and r.attempts == 1 for r in results)


# ---------------------------------------------------------------- inputs and CLI


def _write_live_files(folder, n=5):
    ts = [dt.datetime(2026, 2, 1, 9, 0) + dt.timedelta(minutes=i) for i in range(n)]
    columns = {}
    for f in RAW_TRANSACTION:
        if f.name == "transaction_id":
            columns[f.name] = [f"L{i}" for i in range(n)]
        elif f.name == "timestamp":
            columns[f.name] = ts
        elif f.name == "lane_type":
            columns[f.name] = ["staffed"] * n
        elif f.name == "payment_type":
            columns[f.name] = ["card"] * n
        elif pa.types.is_string(f.type):
            columns[f.name] = ["S01"] * n
        elif pa.types.is_boolean(f.type):
            columns[f.name] = [False] * n
        else:
            columns[f.name] = [1] * n
    stream = folder / "split" / "live_stream.jsonl"
    labels = folder / "split" / "live_labels.parquet"
    storage.write_jsonl(pa.Table.from_pydict(columns, schema=RAW_TRANSACTION), str(stream))
    storage.write_table(
        pa.Table.from_pydict(
            {
                "transaction_id": [f"L{i}" for i in range(n)],
                "is_fraud": [i == 0 for i in range(n)],
                "fraud_type": ["void_abuse" if i == 0 else "none" for i in range(n)],
            },  # written before the cohort labels existed: those columns read as null
            schema=pa.schema(
                LIVE_LABELS.field(n) for n in ("transaction_id", "is_fraud", "fraud_type")
            ),
        ),
        str(labels),
    )
    return stream, labels


def test_load_stream_gives_json_request_bodies_with_iso_timestamps(tmp_path):
    stream, labels = _write_live_files(tmp_path)
    txs = sim.load_stream(str(stream), limit=3)
    assert len(txs) == 3
    assert txs[0]["transaction_id"] == "L0" and txs[0]["timestamp"] == "2026-02-01T09:00:00"
    json.dumps(txs)
    assert sim.load_labels(str(labels))["L0"] == (True, "void_abuse")


def test_latest_live_files_pairs_stream_and_labels_of_the_same_run(tmp_path):
    _write_live_files(tmp_path / "run-old")
    time.sleep(0.02)
    stream, labels = _write_live_files(tmp_path / "run-new")
    assert sim.latest_live_files(tmp_path) == (stream, labels)
    # The local runner's layout: artifact files named after the output, no extension.
    time.sleep(0.02)
    runner_split = tmp_path / "pipeline-root" / "run-3" / "split"
    runner_split.mkdir(parents=True)
    (runner_split / "live_stream").write_bytes(stream.read_bytes())
    (runner_split / "live_labels").write_bytes(labels.read_bytes())
    assert sim.latest_live_files(tmp_path) == (
        runner_split / "live_stream",
        runner_split / "live_labels",
    )
    assert len(sim.load_stream(str(runner_split / "live_stream"))) == 5
    with pytest.raises(SimulatorError, match="no live stream"):
        sim.latest_live_files(tmp_path / "empty")


def test_cli_fails_with_one_line_naming_a_missing_stream(tmp_path, capsys):
    code = sim.main(["--stream", str(tmp_path / "nope.jsonl"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "nope.jsonl" in err[0]


def test_cli_rejects_an_unbounded_duration(tmp_path, capsys):
    stream, _ = _write_live_files(tmp_path)
    code = sim.main(["--stream", str(stream), "--duration", "inf", "--no-progress"])
    assert code == 2 and "duration" in capsys.readouterr().err
