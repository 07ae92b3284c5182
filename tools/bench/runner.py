"""Benchmark the local pipeline runner.

1. Overhead per task: a chain of N no-op container components (``python -c`` that writes its
   output) through our runner, vs ``kfp.local.SubprocessRunner`` on an equivalent chain of
   lightweight Python components, measured in the same process; the bare cost of starting
   N Python interpreters is subtracted to give each runner's own overhead.
2. The full pipeline end to end (wall time, peak RSS of the largest task) on 1M transactions
   (``--quick``: 20k rows, small models).
3. A fully cached rerun of the same pipeline.

Prints a table and writes ``.bench/runner.json``.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import REPO

NOOP = "import pathlib, sys; p = pathlib.Path(sys.argv[-1]); p.parent.mkdir(parents=True, exist_ok=True); p.write_text('x')"


def _noop_chain_yaml(n: int, path: Path) -> Path:
    from kfp import compiler, dsl

    @dsl.container_component
    def head(out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image="python:3.11", command=["python", "-c", NOOP], args=[out.path]
        )

    @dsl.container_component
    def link(src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image="python:3.11", command=["python", "-c", NOOP], args=[src.path, out.path]
        )

    @dsl.pipeline(name="noop-chain")
    def chain():
        task = head()
        for _ in range(n - 1):
            task = link(src=task.outputs["out"])

    compiler.Compiler().compile(chain, str(path))
    return path


def _kfp_local_chain(n: int, root: Path) -> float:
    from kfp import dsl, local

    @dsl.component(install_kfp_package=False)
    def head(out: dsl.Output[dsl.Dataset]):
        with open(out.path, "w") as f:
            f.write("x")

    @dsl.component(install_kfp_package=False)
    def link(src: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset]):
        with open(out.path, "w") as f:
            f.write("x")

    @dsl.pipeline(name="noop-chain-kfp-local")
    def chain():
        task = head()
        for _ in range(n - 1):
            task = link(src=task.outputs["out"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    started = time.perf_counter()
    chain()
    return time.perf_counter() - started


def _bare_python(n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def _run_cli(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of the largest process of a ``python -m pipelines`` run."""
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pipeline run failed:\n{proc.stderr[-3000:]}")
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return wall, peak // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small run: 5-task chain, 20k-row pipeline"
    )
    parser.add_argument("--tasks", type=int, help="no-op chain length (default 10, quick 5)")
    parser.add_argument("--rows", type=int, help="pipeline rows (default 1,000,000, quick 20,000)")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "runner.json")
    args = parser.parse_args(argv)
    n = args.tasks or (5 if args.quick else 10)
    rows = args.rows or (20_000 if args.quick else 1_000_000)

    from components.contracts.settings import Settings
    from pipelines.runner import Runner, RunOptions

    results: dict[str, object] = {
        "quick": args.quick,
        "tasks": n,
        "rows": rows,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        tmp_path = Path(tmp)
        os.environ["VAR_DIR"] = str(tmp_path / "var")
        for key in (
            "MLFLOW_TRACKING_URI",
            "MLFLOW_ARTIFACT_LOCATION",
            "PIPELINE_ROOT",
            "S3_ENDPOINT_URL",
        ):
            os.environ.pop(key, None)

        bare = _bare_python(n)
        chain_yaml = _noop_chain_yaml(n, tmp_path / "chain.yaml")
        started = time.perf_counter()
        Runner(Settings.from_env(), out=None).run(chain_yaml, RunOptions(no_cache=True))
        ours = time.perf_counter() - started
        started = time.perf_counter()
        Runner(Settings.from_env(), out=None).run(chain_yaml, RunOptions())
        ours_cached = time.perf_counter() - started
        kfp_local = _kfp_local_chain(n, tmp_path / "kfp-local-root")
        results["noop_chain"] = {
            "bare_python_s": round(bare, 3),
            "runner_s": round(ours, 3),
            "runner_cached_s": round(ours_cached, 3),
            "kfp_local_subprocess_s": round(kfp_local, 3),
            "runner_overhead_per_task_ms": round((ours - bare) / n * 1000, 1),
            "kfp_local_overhead_per_task_ms": round((kfp_local - bare) / n * 1000, 1),
            "runner_cached_per_task_ms": round(ours_cached / n * 1000, 1),
        }

        env = {**os.environ}
        params = ["--param", f"rows={rows}"]
        if args.quick:
            params += ["--param", "xgb_n_estimators=80", "--param", "iforest_n_estimators=50"]
        wall, peak = _run_cli(["run", "pipelines/cashier_integrity.yaml", *params], env)
        cached, _ = _run_cli(["run", "pipelines/cashier_integrity.yaml", *params], env)
        results["pipeline"] = {
            "wall_s": round(wall, 1),
            "peak_task_rss_mib": peak,
            "cached_rerun_s": round(cached, 2),
        }

    rows_out = [
        ("no-op chain: bare python x N", f"{results['noop_chain']['bare_python_s']:.2f} s"),
        ("no-op chain: our runner", f"{results['noop_chain']['runner_s']:.2f} s"),
        (
            "no-op chain: kfp.local SubprocessRunner",
            f"{results['noop_chain']['kfp_local_subprocess_s']:.2f} s",
        ),
        (
            "overhead per task: our runner",
            f"{results['noop_chain']['runner_overhead_per_task_ms']:.0f} ms",
        ),
        (
            "overhead per task: kfp.local",
            f"{results['noop_chain']['kfp_local_overhead_per_task_ms']:.0f} ms",
        ),
        (
            "cached no-op chain, per task",
            f"{results['noop_chain']['runner_cached_per_task_ms']:.0f} ms",
        ),
        (f"pipeline {rows:,} rows: wall", f"{results['pipeline']['wall_s']:.1f} s"),
        ("pipeline: peak RSS (largest task)", f"{results['pipeline']['peak_task_rss_mib']} MiB"),
        ("pipeline: fully cached rerun", f"{results['pipeline']['cached_rerun_s']:.2f} s"),
    ]
    print(f"runner benchmark ({n}-task chain, {rows:,} rows, {os.cpu_count()} CPUs)")
    for label, value in rows_out:
        print(f"  {label:<42} {value:>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
