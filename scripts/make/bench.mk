# Benchmarks: each prints a table and writes JSON under .bench/ (see README "Benchmarks").
.PHONY: bench
bench: bench-stages bench-train bench-runner bench-serving ## run every benchmark (stages, training, runner, serving); results in .bench/*.json
