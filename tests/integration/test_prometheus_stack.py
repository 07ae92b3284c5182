"""The real serving app + a real Prometheus running the project's config and rules.

The app (uvicorn, champion-style bundle from the session's stage-CLI pipeline run) and
Prometheus (``monitoring/prometheus.yml`` with the targets rewritten to loopback ports, 1 s
scrape and evaluation intervals, temp storage) run as processes on free 127.0.0.1 ports.
Traffic comes from the project's simulator (the live stream of the same pipeline run). The
test then asks Prometheus' HTTP API for the recorded series, the rule health, every
dashboard query, and renders the dashboard to a PNG.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.contracts.schemas import RISK_LEVELS
from tests.conftest import free_port, running
from tests.unit.test_monitoring_config import EXPORTED_METRICS, dashboard_queries
from tools import simulator as sim

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "monitoring"
PROMETHEUS = shutil.which("prometheus")
SERVING_JOB = "pos-risk-serving"


@contextlib.contextmanager
def serve_app(
    bundle_dir: str, workdir: Path, numba_cache: Path
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``uvicorn --factory serving.app:create_app`` on a free loopback port.

    Yields the base URL and the process.

    ``numba_cache`` is shared by the session's app processes: compiling the scoring kernels
    once saves ~15 s per later start on a busy 2-core machine.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app_env = {**os.environ, "MODEL_DIR": bundle_dir, "NUMBA_CACHE_DIR": str(numba_cache)}
    app_env.pop("API_KEY", None)
    cmd = [
        sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with running(cmd, f"{url}/healthz", env=app_env, log=workdir / "app.log", timeout=180) as proc:
        _wait_ready(f"{url}/readyz", 120)
        yield url, proc


def _wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready within {timeout}s")


def numba_cache(tmp_path_factory) -> Path:
    """One numba cache folder for every app process of the test session."""
    return tmp_path_factory.getbasetemp() / "numba-cache"


def prometheus_config(target: str, self_port: int, out_dir: Path) -> Path:
    """The project's prometheus.yml with loopback targets, 1 s intervals and absolute rule paths."""
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str((MON / f).resolve()) for f in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs[SERVING_JOB]["static_configs"][0]["targets"] = [target]
    jobs[SERVING_JOB]["scrape_interval"] = "1s"
    jobs[SERVING_JOB]["scrape_timeout"] = "1s"
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{self_port}"]
    path = out_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def run_prometheus(target: str, workdir: Path) -> Iterator[str]:
    """Real Prometheus scraping ``target``; yields its base URL once it is ready."""
    port = free_port()
    config = prometheus_config(target, port, workdir)
    check = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "config", str(config)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    url = f"http://127.0.0.1:{port}"
    cmd = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    with running(cmd, f"{url}/-/ready", log=workdir / "prometheus.log", timeout=60):
        _wait_ready(f"{url}/-/ready", 60)
        yield url


def api(prom: str, path: str, **params: str) -> dict:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{prom}{path}?{query}", timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def instant(prom: str, expr: str) -> list[dict]:
    return api(prom, "/api/v1/query", query=expr)["result"]


def wait_for(prom: str, expr: str, timeout: float = 45.0, min_series: int = 1) -> list[dict]:
    """Poll an instant query until it returns at least ``min_series`` series."""
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = instant(prom, expr)
        if len(result) >= min_series:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expr!r} returned {result} after {timeout}s")


@pytest.fixture(scope="module")
def stack(trained_pipeline, tmp_path_factory) -> Iterator[dict]:
    """App + Prometheus + one simulator run of 300 live transactions through the app."""
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (apt-get install prometheus; .ci/run does it)")
    work = tmp_path_factory.mktemp("prom-stack")
    app = serve_app(trained_pipeline["bundle"], work, numba_cache(tmp_path_factory))
    with app as (app_url, app_proc):
        target = urllib.parse.urlparse(app_url).netloc
        with run_prometheus(target, work) as prom:
            wait_for(prom, f'up{{job="{SERVING_JOB}"}} == 1')
            transactions = sim.load_stream(trained_pipeline["live_stream"], limit=300)
            config = sim.SimulatorConfig(rate=150.0, concurrency=4, max_requests=300, duration_s=30)
            transport = sim.HttpTransport(app_url, api_key=None, timeout_s=5, concurrency=4)
            try:
                results, elapsed = sim.run(transactions, transport, config)
            finally:
                transport.close()
            yield {
                "app": app_url,
                "app_proc": app_proc,
                "prom": prom,
                "results": results,
                "elapsed": elapsed,
                "work": work,
                "pipeline": trained_pipeline,
            }


def test_app_exports_every_metric_the_rules_and_dashboard_use(stack):
    with urllib.request.urlopen(f"{stack['app']}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    exported = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }
    assert EXPORTED_METRICS - exported == set()


def test_recording_rules_produce_rate_latency_and_risk_mix(stack):
    prom, results = stack["prom"], stack["results"]
    ok = sum(r.ok for r in results)
    assert ok == len(results) == 300

    rate = wait_for(prom, f'job:pos_risk_requests:rate1m{{job="{SERVING_JOB}"}} > 0')
    assert float(rate[0]["value"][1]) > 0

    p95 = wait_for(
        prom,
        f'job_route:pos_risk_request_duration_seconds:p95_rate5m{{job="{SERVING_JOB}", route="/v1/predict"}}',
    )
    assert 0 < float(p95[0]["value"][1]) <= 1.0
    p50 = instant(
        prom, 'job_route:pos_risk_request_duration_seconds:p50_rate5m{route="/v1/predict"}'
    )
    assert float(p50[0]["value"][1]) <= float(p95[0]["value"][1])

    mix = wait_for(prom, f'job_risk_level:pos_risk_predictions:rate5m{{job="{SERVING_JOB}"}}')
    assert {s["metric"]["risk_level"] for s in mix} <= set(RISK_LEVELS)
    assert sum(float(s["value"][1]) for s in mix) > 0

    # Every scored transaction is counted exactly once, by level, as the simulator saw them.
    deadline = time.monotonic() + 20
    while True:
        counts = {
            s["metric"]["risk_level"]: round(float(s["value"][1]))
            for s in instant(prom, "sum by (risk_level) (pos_risk_predictions_total)")
        }
        expected = {}
        for r in results:
            expected[r.risk_level] = expected.get(r.risk_level, 0) + 1
        if counts == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counts == expected

    ratio = wait_for(prom, "job:pos_risk_requests_errors:ratio_rate5m")
    assert float(ratio[0]["value"][1]) == 0.0
    share = wait_for(prom, "job:pos_risk_predictions_high_risk:ratio_rate15m")
    assert 0.0 <= float(share[0]["value"][1]) <= 1.0
    stores = wait_for(prom, "job_store:pos_risk_predictions_high_risk:ratio_rate15m")
    assert all(s["metric"]["store_id"] for s in stores)
    assert wait_for(prom, "job:pos_risk_score:mean_rate15m")
    psi = wait_for(prom, "job:pos_risk_score_psi:avg5m")
    assert float(psi[0]["value"][1]) >= 0
    ready = wait_for(prom, "pos_risk_model_ready")
    assert float(ready[0]["value"][1]) == 1.0


def test_all_rules_evaluate_without_errors_and_no_alert_fires(stack):
    prom = stack["prom"]
    wait_for(prom, "job:pos_risk_requests:rate1m")
    groups = api(prom, "/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    names = {r["name"] for r in rules}
    assert {
        "PosRiskTargetDown",
        "PosRiskLatencyP95AboveSLO",
        "job:pos_risk_requests:rate1m",
    } <= names
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []
    firing = [a for a in api(prom, "/api/v1/alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []


def test_every_dashboard_query_runs_and_the_main_panels_have_data(stack):
    prom = stack["prom"]
    wait_for(prom, "job:pos_risk_score:mean_rate15m")
    empty = []
    for title, expr in dashboard_queries():
        expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
        result = instant(prom, expr)  # raises on a PromQL error
        if not result:
            empty.append(title)
    # Everything has data after one simulator run of clean traffic.
    assert empty == []


def test_render_dashboard_png(stack):
    out = stack["work"] / "dashboard.png"
    summary = stack["work"] / "dashboard.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "tools.dashboard",
            "--prometheus-url", stack["prom"], "--minutes", "2", "--step", "1",
            "--scrape-interval", "1", "--out", str(out), "--summary", str(summary),
        ],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 50_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    series = {p["title"]: p["series"] for p in json.loads(summary.read_text())}
    main_panels = (
        "Throughput (RPS)",
        "P95 latency vs 100 ms target",
        "Risk-level mix",
        "Risk-score distribution",
        "Model version",
    )
    for title in main_panels:
        assert series[title] > 0, proc.stdout
    keep = os.environ.get("DASHBOARD_PNG")  # keep a copy to look at
    if keep:
        shutil.copy(out, keep)


def test_target_down_is_seen_and_its_alert_goes_pending(stack):
    """Runs last in this module: it stops the app under Prometheus' feet."""
    prom = stack["prom"]
    stack["app_proc"].terminate()
    stack["app_proc"].wait(timeout=15)
    wait_for(prom, f'up{{job="{SERVING_JOB}"}} == 0', timeout=20)
    deadline = time.monotonic() + 20
    pending: list[dict] = []
    while time.monotonic() < deadline and not pending:
        pending = [
            a
            for a in api(prom, "/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == "PosRiskTargetDown"
        ]
        time.sleep(0.5)
    assert len(pending) == 1
    assert pending[0]["state"] == "pending"  # "for: 1m" keeps it from firing yet
    assert pending[0]["labels"]["job"] == SERVING_JOB
    assert pending[0]["annotations"]["runbook_url"].endswith("#posrisktargetdown")
