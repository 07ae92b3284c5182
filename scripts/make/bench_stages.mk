# Stage benchmarks (tools/bench/stages.py): wall time and peak RSS of every stage CLI.

.PHONY: bench-stages bench-stages-quick
bench-stages: $(STAMP) ## benchmark every stage CLI on 1M rows + datagen/split/features on 10M (.bench/stages.json)
	$(PY) -m tools.bench.stages $(BENCH_ARGS)

bench-stages-quick: $(STAMP) ## quick stage benchmark: 100k rows, memory run on 1M
	$(PY) -m tools.bench.stages --quick $(BENCH_ARGS)
