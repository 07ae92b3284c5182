"""Static checks of monitoring/: promtool on every file, alert coverage, compose, dashboard.

The compose file is validated against the Compose spec JSON schema vendored in
check-jsonschema (``vendor.compose-spec``); it is not started (no Docker engine here).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; .ci/run does it)"
)

EXPORTED_METRICS = {
    # The serving app's metric names (contract in the shared design), with the series a
    # counter / histogram exposes.
    "pos_risk_requests_total",
    "pos_risk_request_duration_seconds_bucket",
    "pos_risk_request_duration_seconds_sum",
    "pos_risk_request_duration_seconds_count",
    "pos_risk_predictions_total",
    "pos_risk_score_bucket",
    "pos_risk_score_sum",
    "pos_risk_score_count",
    "pos_risk_model_info",
    "pos_risk_model_ready",
    "pos_risk_model_load_seconds",
    "pos_risk_score_psi",
    "pos_risk_profile_lookups_total",
    "pos_risk_profile_fallbacks_total",
}
PROMETHEUS_BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


def recording_rule_names() -> set[str]:
    groups = _yaml(MON / "rules" / "recording.yml")["groups"]
    return {r["record"] for g in groups for r in g["rules"]}


def alert_rules() -> list[dict]:
    groups = _yaml(MON / "rules" / "alerts.yml")["groups"]
    return [r for g in groups for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric / recording-rule names a PromQL expression selects.

    Strips strings, label matchers, range/offset durations and grouping label lists, then
    keeps identifiers that are not function calls, keywords or numbers.
    """
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s, flags=re.I)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard() -> dict:
    return json.loads((MON / "grafana" / "dashboards" / "pos-risk.json").read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


# ---------------------------------------------------------------- promtool


@needs_promtool
def test_promtool_check_config_and_rules():
    proc = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"], cwd=MON, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 rule files found" in proc.stdout
    rules = sorted(str(p) for p in (MON / "rules").glob("*.yml"))
    proc = subprocess.run([PROMTOOL, "check", "rules", *rules], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_rule_unit_tests_pass():
    tests = sorted(str(p) for p in (MON / "tests").glob("*.yml"))
    assert len(tests) >= 2
    proc = subprocess.run([PROMTOOL, "test", "rules", *tests], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_unit_tests_catch_a_broken_threshold(tmp_path):
    """Guard against vacuous rule tests: raising a threshold must make them fail."""
    shutil.copytree(MON / "rules", tmp_path / "rules")
    shutil.copytree(MON / "tests", tmp_path / "tests")
    alerts = tmp_path / "rules" / "alerts.yml"
    text = alerts.read_text()
    assert "> 0.1\n" in text
    alerts.write_text(text.replace("> 0.1\n", "> 0.5\n"))  # the latency SLO
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "tests" / "alerts_test.yml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "PosRiskLatencyP95AboveSLO" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- alerts


def test_every_alert_has_severity_annotations_and_a_runbook_section():
    readme = (MON / "README.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^###\s+(\S+)\s*$", readme, flags=re.M)}
    alerts = alert_rules()
    assert len(alerts) >= 7
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], name
        path, _, anchor = ann["runbook_url"].partition("#")
        assert path == "monitoring/README.md", name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no runbook section"


def test_required_alerts_exist():
    names = {r["alert"] for r in alert_rules()}
    assert {
        "PosRiskTargetDown",
        "PosRiskModelNotReady",
        "PosRiskNoTraffic",
        "PosRiskLatencyP95AboveSLO",
        "PosRiskHighErrorRatio",
        "PosRiskHighRiskShareHigh",
        "PosRiskScoreDrift",
    } <= names


def test_every_alert_is_unit_tested_firing_and_not_firing():
    firing: set[str] = set()
    silent: set[str] = set()
    for path in (MON / "tests").glob("*.yml"):
        for case in _yaml(path).get("tests", []):
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_every_recording_rule_is_unit_tested():
    tested = set()
    for path in (MON / "tests").glob("*.yml"):
        for case in _yaml(path).get("tests", []):
            for check in case.get("promql_expr_test", []):
                tested |= metric_names(check["expr"])
    assert recording_rule_names() - tested == set()


def test_rules_only_use_exported_metrics_or_recorded_series():
    known = EXPORTED_METRICS | PROMETHEUS_BUILTIN | recording_rule_names()
    exprs = [r["expr"] for r in alert_rules()]
    exprs += [
        r["expr"] for g in _yaml(MON / "rules" / "recording.yml")["groups"] for r in g["rules"]
    ]
    for expr in exprs:
        assert metric_names(expr) <= known, expr


# ---------------------------------------------------------------- PromQL name extraction


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum by (job) (rate(pos_risk_requests_total[1m]))", {"pos_risk_requests_total"}),
        (
            'histogram_quantile(0.95, sum by (le) (rate(x_bucket{route="/v1/predict"}[5m])))',
            {"x_bucket"},
        ),
        ("a:b:c / on (job) group_left (model) d > 0.1", {"a:b:c", "d"}),
        ('count(ALERTS{alertstate="firing"}) or vector(0)', {"ALERTS"}),
        (
            "sum by (le) (increase(pos_risk_score_bucket[$__rate_interval]))",
            {"pos_risk_score_bucket"},
        ),
        ("up == 1 unless on (job) foo offset 5m", {"up", "foo"}),
        ("1e-3 * bar", {"bar"}),
    ],
)
def test_metric_names_extracts_selectors(expr, names):
    assert metric_names(expr) == names


# ---------------------------------------------------------------- Grafana


def test_dashboard_queries_refer_to_existing_metrics_or_rules():
    known = EXPORTED_METRICS | PROMETHEUS_BUILTIN | recording_rule_names()
    queries = dashboard_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: query selects no metric: {expr}"
        assert names <= known, f"{title}: unknown series {names - known} in {expr}"


def test_dashboard_has_the_briefs_panels_and_the_operator_extras():
    panels = {p["title"]: p for p in dashboard()["panels"] if p["type"] != "row"}
    assert panels["Throughput (RPS)"]["type"] == "timeseries"
    latency = panels["P95 latency vs 100 ms target"]
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 0.1} in steps
    assert latency["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    assert any("p95" in t["expr"] for t in latency["targets"])
    pie = panels["Risk-level mix"]
    assert pie["type"] == "piechart" and "risk_level" in pie["targets"][0]["expr"]
    heat = panels["Risk-score distribution"]
    assert heat["type"] == "heatmap" and heat["targets"][0]["format"] == "heatmap"
    assert "pos_risk_score_bucket" in heat["targets"][0]["expr"]
    for title in ("5xx error ratio", "Model version", "Score drift", "High-Risk share per store"):
        assert title in panels


def test_dashboard_layout_and_datasource_match_provisioning():
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "pos-risk"
    ds = _yaml(MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    uid = ds[0]["uid"]
    assert ds[0]["type"] == "prometheus" and ds[0]["url"] == "http://prometheus:9090"
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == uid, p["title"]
            assert all(t["datasource"]["uid"] == uid for t in p["targets"]), p["title"]
            assert p.get("description"), f"{p['title']}: operators need a description"
    providers = _yaml(MON / "grafana" / "provisioning" / "dashboards" / "pos-risk.yml")
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


# ---------------------------------------------------------------- docker compose


def _check_compose(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )


def test_compose_file_matches_the_compose_spec_schema(tmp_path):
    proc = _check_compose(MON / "docker-compose.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # ... and the schema check is not vacuous: a misspelt key is rejected.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        (MON / "docker-compose.yml").read_text().replace("healthcheck:", "healthchek:", 1)
    )
    assert _check_compose(broken).returncode != 0


def test_compose_stack_wires_app_prometheus_and_grafana():
    compose = _yaml(MON / "docker-compose.yml")
    services = compose["services"]
    assert {"app", "prometheus", "grafana", "minio", "mlflow"} <= set(services)
    for name, svc in services.items():
        if svc.get("restart") != "no":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (MON / source).exists(), f"{name}: mounts missing {source}"
    assert services["app"]["build"]["target"] == "server"
    assert (REPO / services["app"]["build"]["dockerfile"]).exists()
    assert "8000:8000" in services["app"]["ports"]
    prom = _yaml(MON / "prometheus.yml")
    serving = next(j for j in prom["scrape_configs"] if j["job_name"] == "pos-risk-serving")
    assert serving["static_configs"][0]["targets"] == ["app:8000"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


# ---------------------------------------------------------------- tools.dashboard helpers


def _render_module():
    from tools import dashboard

    return dashboard


def test_grafana_interval_variables_are_substituted_like_grafana():
    rd = _render_module()
    expr = "increase(x[$__rate_interval]) + increase(y[$__range]) + z[${__interval}]"
    # rate interval = max(step + scrape, 4 * scrape) = max(20 + 15, 60) = 60s
    assert rd.substitute_variables(expr, range_s=1800, step_s=20, scrape_s=15) == (
        "increase(x[60s]) + increase(y[1800s]) + z[20s]"
    )
    assert (
        rd.substitute_variables("x[$__rate_interval]", range_s=60, step_s=1, scrape_s=1) == "x[4s]"
    )


def test_legend_format_and_bucket_decumulation():
    rd = _render_module()
    assert rd.legend("{{route}} {{ status }}", {"route": "/v1/predict", "status": "200"}) == (
        "/v1/predict 200"
    )
    assert rd.legend("", {"b": "2", "a": "1"}) == '{a="1", b="2"}'
    inf = float("inf")
    assert rd.decumulate([10, 5, inf], [9, 4, 10]) == [4, 5, 1]
    assert rd.unit_scale("s") == (1000.0, "ms")
    assert rd.format_value(0.0421, "s", 1) == "42.1 ms"


def test_render_dashboard_fails_cleanly_without_prometheus(tmp_path, capsys):
    from tests.conftest import free_port

    rd = _render_module()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = rd.main(["--prometheus-url", url, "--out", str(tmp_path / "d.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot reach Prometheus" in err[0]
    assert not (tmp_path / "d.png").exists()
