"""Benchmark the training stages on the project's own data chain.

Builds a features table with the real stages (datagen -> split -> features, as subprocess
CLIs), then times in-process, without MLflow:

1. train-xgb: production booster fit (rounds, seconds, rounds/s) and its validation quality;
2. train-iforest: forest fit, ``ForestArrays.from_sklearn`` flattening;
3. scoring throughput of the forest: the reference numpy ``ForestArrays.score_samples`` vs
   sklearn's ``IsolationForest.score_samples`` (they agree exactly; this is speed only), and
   XGBoost ``predict`` for comparison.

Prints a table and writes ``.bench/train.json``. ``--quick``: 50k transactions instead of 500k.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import REPO


def _stage(module: str, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"{module} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def build_features(workdir: Path, rows: int) -> Path:
    _stage("components.datagen", "--out-transactions", str(workdir / "tx"), "--rows", str(rows))
    _stage(
        "components.split",
        "--in-transactions",
        str(workdir / "tx"),
        "--out-historic",
        str(workdir / "historic"),
        "--out-live-stream",
        str(workdir / "live.jsonl"),
        "--out-live-labels",
        str(workdir / "live_labels.parquet"),
        "--out-time-splits",
        str(workdir / "splits.json"),
    )
    _stage(
        "components.features",
        "--in-historic",
        str(workdir / "historic"),
        "--in-time-splits",
        str(workdir / "splits.json"),
        "--out-features",
        str(workdir / "features.parquet"),
        "--out-profiles",
        str(workdir / "profiles.parquet"),
    )
    return workdir / "features.parquet"


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k transactions")
    parser.add_argument("--rows", type=int, help="transactions to generate (overrides --quick)")
    parser.add_argument("--out", default=str(REPO / ".bench" / "train.json"))
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 500_000)

    from components.contracts.training import prefer_passive_openmp

    prefer_passive_openmp()
    import numpy as np
    import xgboost as xgb

    from components.contracts import storage
    from components.contracts.features import FEATURE_NAMES
    from components.contracts.training import training_data
    from components.train_iforest import logic as iforest_logic
    from components.train_xgb import logic as xgb_logic

    results: dict[str, object] = {
        "rows_generated": rows,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "xgboost": xgb.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        env_var = Path(tmp) / "var"
        os.environ["VAR_DIR"] = str(env_var)
        started = time.perf_counter()
        features = build_features(Path(tmp), rows)
        results["data_chain_seconds"] = round(time.perf_counter() - started, 2)
        data = training_data(storage.read_table(str(features)), FEATURE_NAMES, source=str(features))
    results["train_rows"], results["valid_rows"] = data.train.n, data.valid.n

    params = xgb_logic.XgbParams()
    booster = xgb_logic.train_booster(data.train, data.valid, FEATURE_NAMES, params)
    results["xgb"] = {
        "rounds_trained": booster.rounds_trained,
        "best_iteration": booster.best_iteration,
        "fit_seconds": round(booster.train_seconds, 3),
        "rounds_per_second": round(_rate(booster.rounds_trained, booster.train_seconds), 1),
        "valid": booster.valid_metrics,
    }

    forest = iforest_logic.train_forest(data, iforest_logic.IForestParams())
    started = time.perf_counter()
    type(forest.arrays).from_sklearn(forest.model)
    flatten = time.perf_counter() - started
    X = data.valid.X
    timings = {}
    for name, fn in (
        ("forest_arrays_numpy", forest.arrays.score_samples),
        ("sklearn_score_samples", forest.model.score_samples),
        (
            "xgb_predict",
            lambda m: booster.booster.predict(xgb.DMatrix(m, feature_names=list(FEATURE_NAMES))),
        ),
    ):
        fn(X[:100])  # warm-up
        started = time.perf_counter()
        fn(X)
        timings[name] = time.perf_counter() - started
    assert np.array_equal(forest.arrays.score_samples(X), forest.model.score_samples(X))
    results["iforest"] = {
        "fit_seconds": round(forest.train_seconds, 3),
        "flatten_seconds": round(flatten, 4),
        "n_nodes": forest.arrays.n_nodes,
        "valid": forest.valid_metrics,
    }
    results["scoring_rows_per_second"] = {k: round(_rate(len(X), v)) for k, v in timings.items()}

    table = [
        ("data chain (datagen+split+features)", f"{results['data_chain_seconds']:.1f} s"),
        ("train / valid rows", f"{data.train.n:,} / {data.valid.n:,}"),
        (
            "xgb fit",
            f"{booster.train_seconds:.1f} s, {booster.rounds_trained} rounds "
            f"({results['xgb']['rounds_per_second']}/s)",
        ),
        (
            "xgb valid PR-AUC / R@1%FPR",
            f"{booster.valid_metrics['pr_auc']:.4f} / "
            f"{booster.valid_metrics['recall_at_1pct_fpr']:.4f}",
        ),
        ("iforest fit / flatten", f"{forest.train_seconds:.2f} s / {flatten * 1000:.1f} ms"),
        (
            "iforest valid PR-AUC / R@1%FPR",
            f"{forest.valid_metrics['pr_auc']:.4f} / "
            f"{forest.valid_metrics['recall_at_1pct_fpr']:.4f}",
        ),
        *((f"score rows/s: {k}", f"{v:,}") for k, v in results["scoring_rows_per_second"].items()),
    ]
    width = max(len(k) for k, _ in table)
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
