"""Benchmark every pipeline stage CLI: wall time and peak memory, one fresh process per stage.

Chains datagen -> split -> features -> train-xgb -> train-iforest -> evaluate -> register on
``--rows`` transactions in a temporary folder (embedded defaults: local files, SQLite MLflow),
then datagen -> split -> features on ``--big-rows`` to check that memory stays bounded
(goal: peak RSS < ``--rss-goal-gib``). A stage whose module does not exist yet is skipped,
and so is everything that needs its output. Prints a table and writes JSON
(default ``.bench/stages.json``).

Peak RSS is the child's own ``ru_maxrss`` from ``os.wait4`` (the stage process and any
children it waited for), so stages never pollute each other's numbers.

Usage:
    python -m tools.bench.stages --quick          # 100k rows, big run 1M
    python -m tools.bench.stages                  # 1M rows, big run 10M
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tools import REPO

GIB = 1024**3


@dataclass
class StageResult:
    run: str
    stage: str
    rows: int
    status: str
    """ok / failed / skipped."""
    wall_s: float | None = None
    peak_rss_mib: float | None = None
    note: str = ""


def stage_commands(work: Path, rows: int, *, full: bool) -> list[tuple[str, list[str]]]:
    """(module, CLI args) for each stage, in order; ``full=False`` stops after features."""
    w = str(work)
    cmds = [
        ("datagen", ["--out-transactions", f"{w}/transactions", "--rows", str(rows),
                     "--seed", "42"]),
        ("split", ["--in-transactions", f"{w}/transactions", "--out-historic", f"{w}/historic",
                   "--out-live-stream", f"{w}/live.jsonl",
                   "--out-live-labels", f"{w}/live_labels.parquet",
                   "--out-time-splits", f"{w}/time_splits.json"]),
        ("features", ["--in-historic", f"{w}/historic", "--in-time-splits",
                      f"{w}/time_splits.json", "--out-features", f"{w}/features.parquet",
                      "--out-profiles", f"{w}/profiles.parquet"]),
    ]  # fmt: skip
    if full:
        cmds += [
            ("train_xgb", ["--in-features", f"{w}/features.parquet", "--out-model", f"{w}/xgb",
                           "--out-metrics", f"{w}/xgb_metrics.json"]),
            ("train_iforest", ["--in-features", f"{w}/features.parquet",
                               "--out-model", f"{w}/iforest",
                               "--out-metrics", f"{w}/iforest_metrics.json"]),
            ("evaluate", ["--in-features", f"{w}/features.parquet",
                          "--in-xgb-model", f"{w}/xgb", "--in-iforest-model", f"{w}/iforest",
                          "--out-evaluation", f"{w}/evaluation",
                          "--out-metrics", f"{w}/eval_metrics.json",
                          "--out-classification-metrics", f"{w}/classification.json",
                          "--out-report", f"{w}/report.html"]),
            ("register", ["--in-xgb-model", f"{w}/xgb", "--in-iforest-model", f"{w}/iforest",
                          "--in-evaluation", f"{w}/evaluation",
                          "--in-profiles", f"{w}/profiles.parquet",
                          "--in-features", f"{w}/features.parquet",
                          "--out-bundle", f"{w}/bundle", "--out-decision", f"{w}/decision.json"]),
        ]  # fmt: skip
    return cmds


NEEDS = {
    "split": {"datagen"},
    "features": {"split"},
    "train_xgb": {"features"},
    "train_iforest": {"features"},
    "evaluate": {"train_xgb", "train_iforest"},
    "register": {"evaluate"},
}


def module_exists(stage: str) -> bool:
    try:
        return importlib.util.find_spec(f"components.{stage}.__main__") is not None
    except ModuleNotFoundError:
        return False


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """Run ``cmd``; return (exit code, wall seconds, peak RSS MiB of that process tree)."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 already
    wall = time.perf_counter() - started
    rss_kib = usage.ru_maxrss  # KiB on Linux
    return proc.returncode, wall, rss_kib / 1024.0


def bench_chain(
    run: str, rows: int, work: Path, env: dict[str, str], *, full: bool
) -> list[StageResult]:
    results: list[StageResult] = []
    done: set[str] = set()
    for stage, args in stage_commands(work, rows, full=full):
        missing = NEEDS.get(stage, set()) - done
        if not module_exists(stage):
            results.append(StageResult(run, stage, rows, "skipped", note="module not written yet"))
            print(f"  {stage:<14} skipped: components/{stage}/__main__.py does not exist yet")
            continue
        if missing:
            note = f"needs {', '.join(sorted(missing))}"
            results.append(StageResult(run, stage, rows, "skipped", note=note))
            print(f"  {stage:<14} skipped: {note}")
            continue
        log = work / f"{stage}.log"
        print(f"  {stage:<14} running ...", end="", flush=True)
        code, wall, rss = run_measured(
            [sys.executable, "-m", f"components.{stage}", *args], env, log
        )
        status = "ok" if code == 0 else "failed"
        note = "" if code == 0 else _last_line(log)
        print(f"\r  {stage:<14} {status:<7} {wall:8.1f} s {rss:9.0f} MiB  {note}")
        results.append(StageResult(run, stage, rows, status, round(wall, 2), round(rss, 1), note))
        if code == 0:
            done.add(stage)
    return results


def _last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def stage_env(work: Path) -> dict[str, str]:
    """Embedded defaults inside ``work``: no S3, SQLite MLflow under ``work/var``."""
    env = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_LOCATION", "PIPELINE_ROOT",
                "S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # fmt: skip
        env.pop(key, None)
    env["VAR_DIR"] = str(work / "var")
    env["PIPELINE_RUN_ID"] = f"bench-{int(time.time())}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def print_table(results: list[StageResult]) -> None:
    header = f"{'run':<6} {'stage':<14} {'rows':>11} {'status':<8} {'wall s':>8} {'peak RSS MiB':>13}  note"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        wall = f"{r.wall_s:8.1f}" if r.wall_s is not None else f"{'-':>8}"
        rss = f"{r.peak_rss_mib:13.0f}" if r.peak_rss_mib is not None else f"{'-':>13}"
        print(f"{r.run:<6} {r.stage:<14} {r.rows:>11,} {r.status:<8} {wall} {rss}  {r.note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="Rows for the full chain.")
    p.add_argument("--big-rows", type=int, default=10_000_000,
                   help="Rows for the datagen+split+features memory run (0 skips it).")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="Small run: 100k rows, big run 1M.")
    p.add_argument("--rss-goal-gib", type=float, default=6.0, help="Peak RSS goal of the big run.")
    p.add_argument("--out", default=str(REPO / ".bench" / "stages.json"), help="JSON output.")
    p.add_argument("--workdir", default=None, help="Keep stage outputs here (default: temp).")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.big_rows = 100_000, 1_000_000

    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-stages-"))
    results: list[StageResult] = []
    try:
        for run, rows, full in (("main", args.rows, True), ("big", args.big_rows, False)):
            if rows <= 0:
                continue
            work = base / run
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            print(f"{run}: {rows:,} rows in {work}")
            results += bench_chain(run, rows, work, stage_env(work), full=full)
            if not args.workdir:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)

    print_table(results)
    big = [r for r in results if r.run == "big" and r.peak_rss_mib is not None]
    big_peak = max((r.peak_rss_mib for r in big), default=None)
    goal_met = None if big_peak is None else big_peak < args.rss_goal_gib * 1024
    if big_peak is not None:
        verdict = "met" if goal_met else "MISSED"
        print(
            f"\nbig run peak RSS {big_peak / 1024:.2f} GiB (goal < {args.rss_goal_gib} GiB): {verdict}"
        )
    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "rows": args.rows,
        "big_rows": args.big_rows,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "big_peak_rss_mib": big_peak,
        "rss_goal_gib": args.rss_goal_gib,
        "rss_goal_met": goal_met,
        "stages": [asdict(r) for r in results],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    failed = [r for r in results if r.status == "failed"]
    return 1 if failed or goal_met is False else 0


if __name__ == "__main__":
    sys.exit(main())
