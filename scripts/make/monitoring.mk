# Monitoring: promtool checks and rule unit tests, traffic simulator, dashboard snapshot.
PROMTOOL ?= promtool
PROMETHEUS_URL ?= http://127.0.0.1:9090
SIMULATE_URL ?= http://127.0.0.1:8000
SIMULATE_ARGS ?= --rate 20 --max-requests 1000 --duration 120

.PHONY: monitoring-check
monitoring-check: $(STAMP) ## promtool check config/rules, promtool rule unit tests, compose schema and dashboard checks
	cd monitoring && $(PROMTOOL) check config prometheus.yml
	$(PROMTOOL) check rules monitoring/rules/*.yml
	$(PROMTOOL) test rules monitoring/tests/*.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec monitoring/docker-compose.yml
	$(PY) -m pytest -q tests/unit/test_monitoring_config.py

.PHONY: simulate
simulate: $(STAMP) ## replay the latest live stream against $(SIMULATE_URL) (SIMULATE_ARGS="--rate 50 ...")
	$(PY) -m tools.simulator --stream latest --url $(SIMULATE_URL) --report var/simulation.json $(SIMULATE_ARGS)

.PHONY: dashboard-png
dashboard-png: $(STAMP) ## render the Grafana dashboard's panels from $(PROMETHEUS_URL) to var/dashboard.png
	$(PY) -m tools.dashboard --prometheus-url $(PROMETHEUS_URL) --minutes 30 --out var/dashboard.png
