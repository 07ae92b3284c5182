# Pipeline: compile the KFP YAML, run it locally, inspect runs, submit to Kubeflow.
PIPELINE_YAML := pipelines/cashier_integrity.yaml
PIPELINE_SOURCES := $(wildcard pipelines/*.py components/*/component.py components/*/spec.py components/contracts/spec.py)
RUN_ARGS ?=

$(PIPELINE_YAML): $(PIPELINE_SOURCES) | $(STAMP)
	$(PY) -m pipelines compile

.PHONY: compile
compile: $(STAMP) ## compile the pipeline and component YAML (pipelines/cashier_integrity.yaml, components/*/component.yaml) and the README parameter tables
	$(PY) -m pipelines compile

.PHONY: compile-check
compile-check: $(STAMP) ## fail when the checked-in compiled YAML or a README parameter table is stale
	$(PY) -m pipelines compile-check

.PHONY: run
run: $(STAMP) $(PIPELINE_YAML) ## run the whole pipeline locally (cached; RUN_ARGS="--param rows=50000 --no-cache")
	$(PY) -m pipelines run $(PIPELINE_YAML) $(RUN_ARGS)

.PHONY: runs
runs: $(STAMP) ## list local pipeline runs
	$(PY) -m pipelines runs

.PHONY: rerun-from
rerun-from: $(STAMP) $(PIPELINE_YAML) ## rerun TASK and everything downstream (make rerun-from TASK=evaluate)
	@test -n "$(TASK)" || { echo "usage: make rerun-from TASK=<task> (datagen split features train-xgb train-iforest evaluate register)"; exit 2; }
	$(PY) -m pipelines run $(PIPELINE_YAML) --rerun-from $(TASK) $(RUN_ARGS)

.PHONY: submit
submit: $(STAMP) $(PIPELINE_YAML) ## submit the compiled pipeline to Kubeflow (KFP_HOST=http://... [SUBMIT_ARGS=...])
	@test -n "$(KFP_HOST)" || { echo "usage: make submit KFP_HOST=http://<kfp-api> [SUBMIT_ARGS='--param rows=1000000']"; exit 2; }
	$(PY) -m pipelines submit $(PIPELINE_YAML) --host $(KFP_HOST) $(SUBMIT_ARGS)

.PHONY: bench-runner
bench-runner: $(STAMP) ## benchmark the local runner (overhead per task vs kfp.local, 1M-row pipeline, cached rerun)
	$(PY) scripts/bench_runner.py $(BENCH_ARGS)

.PHONY: realism
realism: $(STAMP) ## realism report of the generated world: best single field per fraud type, theft per shift, cohorts (REALISM_ARGS="--rows 30000" or "--in-transactions DIR")
	$(PY) -m tools.realism $(REALISM_ARGS)
