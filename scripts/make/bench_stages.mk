# Stage benchmarks (scripts/bench_stages.py): wall time and peak RSS of every stage CLI.

.PHONY: bench-stages bench-stages-quick
bench-stages: $(STAMP) ## benchmark every stage CLI on 1M rows + datagen/split/features on 10M (.bench/stages.json)
	$(PY) scripts/bench_stages.py $(BENCH_ARGS)

bench-stages-quick: $(STAMP) ## quick stage benchmark: 100k rows, memory run on 1M
	$(PY) scripts/bench_stages.py --quick $(BENCH_ARGS)
