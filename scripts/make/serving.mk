# Serving: run the API, bake the champion into serving/model/, benchmark.
SERVE_PORT ?= 8000
SERVE_WORKERS ?= 1
MODEL_URI ?= models:/$${MODEL_NAME:-cashier-integrity-risk}@$${CHAMPION_ALIAS:-champion}

.PHONY: serve
serve: $(STAMP) ## serve the API on :$(SERVE_PORT): MODEL_DIR=<bundle folder> if set, else the registry champion (MODEL_URI); live profiles in process, or in Redis with REDIS_URL
	@if [ -n "$$MODEL_DIR" ]; then echo "serving bundle $$MODEL_DIR"; else echo "serving $(MODEL_URI)"; fi
	MODEL_URI="$(MODEL_URI)" $(VENV)/bin/uvicorn --factory serving.app:create_app \
		--host 0.0.0.0 --port $(SERVE_PORT) --workers $(SERVE_WORKERS) --no-access-log

.PHONY: seed-store
seed-store: $(STAMP) ## seed the Redis profile store (REDIS_URL) from MODEL_DIR's bundle profiles; idempotent
	$(PY) -m serving.store seed

.PHONY: bake
bake: $(STAMP) ## download the registry champion into serving/model/ (manifest sha256 verified)
	$(PY) -m tools.delivery.bake --model-uri "$(MODEL_URI)" --out serving/model

.PHONY: bench-serving
bench-serving: $(STAMP) ## serving benchmark (in-process, memory/Redis/frozen profile stores, baselines) on the registry champion if `make run` made one, else a demo bundle (BENCH_ARGS=--quick); .bench/serving.json
	@if [ -f "$${VAR_DIR:-var}/mlflow/mlflow.db" ] && [ -z "$$MODEL_DIR" ]; then \
		echo "benchmarking $(MODEL_URI) (also against mlflow models serve)"; \
		$(PY) -m tools.bench.serving --model-uri "$(MODEL_URI)" $(BENCH_ARGS); \
	else \
		$(PY) -m tools.bench.serving $(BENCH_ARGS); \
	fi

.PHONY: test-serving
test-serving: $(STAMP) ## serving unit and integration tests
	$(PY) -m pytest -q tests/unit/test_serving_*.py tests/integration/test_serving_*.py

SCHEMATHESIS_EXAMPLES ?= 850
SCHEMATHESIS_MIN_CASES ?= 2000

.PHONY: test-schemathesis
test-schemathesis: $(STAMP) ## schemathesis, every check, >= 2,000 cases against uvicorn on loopback (SCHEMATHESIS_EXAMPLES per operation and phase)
	SCHEMATHESIS_EXAMPLES=$(SCHEMATHESIS_EXAMPLES) SCHEMATHESIS_MIN_CASES=$(SCHEMATHESIS_MIN_CASES) \
		$(PY) -m pytest -q -s tests/integration/test_serving_hostile_http.py -k schemathesis
