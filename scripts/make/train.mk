# Training stages (train-xgb, train-iforest): tests and benchmark.
.PHONY: test-train
test-train: $(STAMP) ## unit + integration tests of train-xgb, train-iforest and the forest format
	$(PY) -m pytest -q tests/unit/test_train_xgb.py tests/unit/test_train_iforest.py \
		tests/unit/test_forest.py tests/integration/test_train_cli.py

.PHONY: bench-train
bench-train: $(STAMP) ## training benchmark on the real data chain (BENCH_ARGS=--quick: 50k rows); writes .bench/train.json
	$(PY) scripts/bench_train.py $(BENCH_ARGS)
