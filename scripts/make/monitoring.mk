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

SIM_COHORT_ARGS ?= --rate 0 --concurrency 1 --max-requests 100000 --duration 600 --no-progress

.PHONY: simulate-cohorts
simulate-cohorts: $(STAMP) ## replay the latest live stream in-process (Lambda handler; MODEL_URI or MODEL_DIR) with PROFILE_STORE=frozen, then the live store, and print the per-cohort table side by side (SIM_COHORT_ARGS="--alert-score 11.1 ...")
	PROFILE_STORE=frozen $(PY) -m tools.simulator --stream latest --lambda-handler --report $${VAR_DIR:-var}/sim-frozen.json $(SIM_COHORT_ARGS) > /dev/null
	PROFILE_STORE=memory $(PY) -m tools.simulator --stream latest --lambda-handler --report $${VAR_DIR:-var}/sim-live.json $(SIM_COHORT_ARGS) > /dev/null
	$(PY) -m tools.simulator.compare frozen=$${VAR_DIR:-var}/sim-frozen.json live=$${VAR_DIR:-var}/sim-live.json

.PHONY: dashboard-png
dashboard-png: $(STAMP) ## render the Grafana dashboard's panels from $(PROMETHEUS_URL) to var/dashboard.png
	$(PY) -m tools.dashboard --prometheus-url $(PROMETHEUS_URL) --minutes 30 --out var/dashboard.png
