"""Serving benchmark: in-process scoring, batch throughput, HTTP latency/throughput, soak.

    python -m tools.bench.serving --quick                  # short run on a demo bundle
    python -m tools.bench.serving --model-dir serving/model
    python -m tools.bench.serving --model-uri models:/cashier-integrity-risk@champion

Measured in the same run, on the same model:

* in-process: one transaction through features + both models + blend (p50/p99), and its parts,
  with the bundle's frozen profile and with the live in-process profile store (read + fold);
* batch: rows/s on 2 threads of the bitvector kernels (models + blend, and each model
  alone), and end to end (features, both models, blend, reason-code attributions);
* HTTP (uvicorn, one worker, server and load generator pinned to different cores with
  taskset; load from ``wrk``, or a Python generator when wrk is missing): p50/p95/p99 at
  concurrency 1, requests/s and the server's CPU per request at concurrency 16, for our app with each profile store (in-process,
  Redis on loopback - a ``redis-server`` started for the run - and frozen) and for baselines: a brief-style
  FastAPI app (pandas one-row DataFrame, XGBClassifier.predict_proba,
  IsolationForest.decision_function), a constant-response Litestar route, and
  ``mlflow models serve`` on the registered model (only with ``--model-uri``);
* soak: many requests at concurrency 32, errors and worker RSS growth.

Prints a table and writes ``.bench/serving.json``. Targets (full run on an idle machine):
in-process p50 < 50 us (< 40 us with the live in-process store), HTTP p99 < 1 ms at c=1 (with
Redis too), >= 3,000 req/s at c=16 on one worker, Redis >= 70% of the frozen path's req/s at
c=16, batch >= 500k rows/s on 2 threads, soak zero errors and RSS growth < 5%.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tools import REPO
from tools.bench.http import (
    BODY,
    Server,
    cpu_seconds,
    free_port,
    load_python,
    load_wrk,
    pct,
    post_once,
    redis_server,
    rss_kb,
)

# ---------------------------------------------------------------- measurements


def bench_inprocess(model_dir: str, iterations: int) -> dict:
    import msgspec
    import numpy as np

    from components.contracts import features as feats
    from components.contracts.engine import score_pair_row
    from serving.model_loader import load
    from serving.schemas import PredictRequest
    from serving.settings import ServingSettings
    from serving.store import InProcessStore, LiveProfiles

    loaded = load(ServingSettings(model_dir=model_dir))
    scorer = loaded.scorer
    raw_body = msgspec.json.encode(BODY)
    request = msgspec.json.decode(raw_body, type=PredictRequest)
    for _ in range(200):
        scorer.score_one(request)

    def timed(fn) -> dict:
        samples = []
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) / 1000)
        return {"p50_us": statistics.median(samples), "p99_us": pct(samples, 99)}

    store = InProcessStore()
    store.seed(scorer.models.profiles, loaded.bundle.sha256)
    live = LiveProfiles(store, scorer.models.profiles)
    # A new transaction_id per call (made outside the timing): each one is read and folded.
    fresh = iter(
        [msgspec.structs.replace(request, transaction_id=f"T{i}") for i in range(iterations + 200)]
    )
    for _ in range(200):
        scorer.score_one(next(fresh), live)
    x = scorer.features_one(request)[0][0].copy()
    contrib = np.empty(len(feats.FEATURE_NAMES) + 1, dtype=np.float32)
    top = np.empty(3, dtype=np.int64)
    m = scorer.models
    return {
        "model": {
            "xgb_trees": m.xgb.num_trees,
            "iforest_trees": m.forest.num_trees,
            "version": loaded.version,
        },
        "score_one": timed(lambda: scorer.score_one(request)),
        "score_one_live_memory": timed(lambda: scorer.score_one(next(fresh), live)),
        "decode_and_score": timed(
            lambda: scorer.score_one(msgspec.json.decode(raw_body, type=PredictRequest))
        ),
        "features_only": timed(lambda: scorer.features_one(request)),
        "models_only": timed(lambda: score_pair_row(x, m.xgb, m.forest, contrib, top)),
    }


def bench_batch(model_dir: str, rows: int, threads: int, repeats: int = 3) -> dict:
    """Rows/s of the batch paths: the median of ``repeats`` timed runs, after a warm-up run
    of every kernel (compiled or loaded from numba's cache outside the timing)."""
    import numba
    import numpy as np

    from components.contracts import blend as blend_mod
    from components.contracts import features as feats
    from components.contracts.engine.kernels import top_positive_batch
    from serving.model_loader import load
    from serving.settings import ServingSettings

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    scorer = load(ServingSettings(model_dir=model_dir)).scorer
    rng = np.random.default_rng(0)
    base = scorer.features_one(BODY)[0].copy()
    X = np.repeat(base, rows, axis=0) * rng.uniform(0.5, 1.5, size=(rows, base.shape[1]))
    m = scorer.models
    raw = np.repeat(feats.raw_row(BODY), rows, axis=0)
    prior = np.repeat(m.profiles.prior_for("C001", "S01")[None, :], rows, axis=0)
    top = np.empty((rows, 3), dtype=np.int64)
    small = [dict(BODY, transaction_id=f"T{i}") for i in range(1000)]

    def models() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        margins = m.xgb.margins(X)
        t1 = time.perf_counter()
        scores = m.forest.scores(X)
        t2 = time.perf_counter()
        blend_mod.risk_score(margins, scores, m.blend)
        return time.perf_counter() - t0, t1 - t0, t2 - t1

    def end_to_end() -> float:
        t0 = time.perf_counter()
        F = feats.compute_features(raw, prior)
        margins, contribs = m.xgb.margins_contribs(F)
        blend_mod.risk_score(margins, m.forest.scores(F), m.blend)
        top_positive_batch(contribs, top)
        return time.perf_counter() - t0

    def api() -> float:
        t0 = time.perf_counter()
        scorer.score_many(small)
        return time.perf_counter() - t0

    models(), end_to_end(), api()  # warm-up
    runs = [models() for _ in range(repeats)]
    models_s, xgb_s, iforest_s = (statistics.median(r[k] for r in runs) for k in range(3))
    e2e_s = statistics.median(end_to_end() for _ in range(repeats))
    api_s = statistics.median(api() for _ in range(repeats))
    return {
        "threads": numba.get_num_threads(),
        "rows": rows,
        "repeats": repeats,
        "models_rows_per_s": rows / models_s,
        "xgb_rows_per_s": rows / xgb_s,
        "iforest_rows_per_s": rows / iforest_s,
        "features_models_reasons_rows_per_s": rows / e2e_s,
        "score_many_1000_ms": api_s * 1000,
    }


def bench_http(args, model_dir: str, work: Path) -> dict:
    cores = (0, 1) if (os.cpu_count() or 1) >= 2 else (None, None)
    server_core, client_core = cores
    gen = load_wrk if shutil.which("wrk") and not args.python_load else load_python
    env = {
        **os.environ,
        "MODEL_DIR": model_dir,
        "PYTHONPATH": str(REPO),
        "NUMBA_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MODEL_URI", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    results: dict = {
        "generator": gen.__name__.removeprefix("load_"),
        "server_core": server_core,
        "client_core": client_core,
    }
    uv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    app = [*uv, "--factory", "serving.app:create_app"]
    targets = {
        "litestar_app": (app, {**env, "PROFILE_STORE": "memory"}, "/healthz"),
        "litestar_app_frozen": (app, {**env, "PROFILE_STORE": "frozen"}, "/healthz"),
        "litestar_app_redis": (app, {**env, "REDIS_URL": "", "PROFILE_STORE": "redis"}, "/healthz"),
        "constant_litestar": (
            [*uv, "--factory", "tools.bench.apps.constant:create_app"],
            env,
            "/schema",
        ),
        "fastapi_pandas_sklearn": (
            [*uv, "--factory", "tools.bench.apps.fastapi_baseline:create_app"],
            env,
            "/docs",
        ),
    }
    if args.model_uri:
        targets["mlflow_models_serve"] = (
            [
                str(Path(sys.executable).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                args.model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ],
            # mlflow execs `uvicorn` by name: the venv's bin must be on PATH.
            {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"},
            "/ping",
        )
    with contextlib.ExitStack() as stack:
        try:
            # On the load generator's core: the app server's core runs only the app.
            redis_url = stack.enter_context(redis_server(work, core=client_core))
            targets["litestar_app_redis"][1]["REDIS_URL"] = redis_url
        except (OSError, RuntimeError) as exc:  # reported in the table, not fatal
            results["litestar_app_redis"] = {"error": f"no redis-server: {exc}"}
            del targets["litestar_app_redis"]
        for name, (cmd, target_env, health) in targets.items():
            results[name] = bench_target(
                name, cmd, target_env, health, args, work, (server_core, client_core), gen
            )
    return results


def bench_target(name, cmd, env, health, args, work, cores, gen) -> dict:
    """c=1 latency and c=16 throughput of one server (plus the soak for our app)."""
    server_core, client_core = cores
    seconds = args.seconds
    port = free_port()
    cmd = [*cmd, "--port", str(port)]
    path = "/invocations" if name == "mlflow_models_serve" else "/v1/predict"
    body = {"dataframe_records": [BODY]} if name == "mlflow_models_serve" else BODY
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with Server(
            cmd, env, f"http://127.0.0.1:{port}{health}", work / f"{name}.log", server_core
        ) as server:
            for _ in range(300):
                post_once(url, json.dumps(body).encode())
            entry = {"c1": gen(url, body, connections=1, seconds=seconds, core=client_core)}
            cpu0 = cpu_seconds(server.proc.pid)
            entry["c16"] = gen(url, body, connections=16, seconds=seconds, core=client_core)
            # The server's own CPU per request: what bounds one worker's throughput on an
            # idle core, and far less sensitive to other load on a shared machine than req/s.
            entry["c16"]["server_cpu_us_per_request"] = (
                1e6 * (cpu_seconds(server.proc.pid) - cpu0) / max(entry["c16"]["requests"], 1)
            )
            if name == "litestar_app":
                rss0 = rss_kb(server.proc.pid)
                entry["soak"] = gen(
                    url, body, connections=32, seconds=args.soak_seconds, core=client_core
                )
                rss1 = rss_kb(server.proc.pid)
                entry["soak"] |= {
                    "rss_kb_before": rss0,
                    "rss_kb_after": rss1,
                    "rss_growth_pct": 100.0 * (rss1 - rss0) / max(rss0, 1),
                }
            return entry
    except Exception as exc:  # a baseline that cannot run is reported, not fatal
        return {"error": str(exc)[-500:]}


def build_bundle(args, work: Path) -> str:
    if args.model_dir:
        return args.model_dir
    if args.model_uri:
        from tools.delivery.bake import bake_bundle

        return str(bake_bundle(args.model_uri, work / "model").root)
    from tools.demo import build_demo_bundle

    print(
        "no --model-dir/--model-uri: building a demo bundle "
        f"({args.demo_trees} XGBoost trees depth 6, {args.demo_iforest} isolation trees)"
    )
    return str(
        build_demo_bundle(
            work / "model",
            rows=args.demo_rows,
            n_estimators=args.demo_trees,
            max_depth=6,
            iforest_trees=args.demo_iforest,
        ).path
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.serving", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short run (shared machine)")
    parser.add_argument("--model-dir", help="bundle folder to serve")
    parser.add_argument("--model-uri", help="registry URI (also benchmarks mlflow models serve)")
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even when wrk is installed",
    )
    parser.add_argument("--skip-http", action="store_true", help="in-process numbers only")
    parser.add_argument("--out", default=str(REPO / ".bench" / "serving.json"))
    args = parser.parse_args(argv)
    args.seconds = 3 if args.quick else 15
    args.soak_seconds = 5 if args.quick else 40  # ~100k+ requests at c=32 on an idle core
    args.demo_rows = 6000 if args.quick else 20000
    args.demo_trees, args.demo_iforest = 200, 100
    iterations = 3000 if args.quick else 30000
    batch_rows = 50_000 if args.quick else 400_000

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        model_dir = build_bundle(args, work)
        report = {
            "quick": args.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg": os.getloadavg(),
            },
        }
        report["in_process"] = bench_inprocess(model_dir, iterations)
        report["batch"] = bench_batch(model_dir, batch_rows, threads=2)
        if not args.skip_http:
            report["http"] = bench_http(args, model_dir, work)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {out}")
    return 0


def print_table(r: dict) -> None:
    ip, b = r["in_process"], r["batch"]
    rows = [
        (
            "in-process score_one p50 / p99 (us)",
            f"{ip['score_one']['p50_us']:.1f} / {ip['score_one']['p99_us']:.1f}",
            "p50 < 50",
        ),
        (
            "in-process live store (memory) p50 / p99 (us)",
            f"{ip['score_one_live_memory']['p50_us']:.1f} / "
            f"{ip['score_one_live_memory']['p99_us']:.1f}",
            "p50 < 40",
        ),
        ("  decode+score p50 (us)", f"{ip['decode_and_score']['p50_us']:.1f}", ""),
        ("  features only p50 (us)", f"{ip['features_only']['p50_us']:.1f}", ""),
        (
            f"  both models p50 (us) [{ip['model']['xgb_trees']}+{ip['model']['iforest_trees']} "
            "trees]",
            f"{ip['models_only']['p50_us']:.1f}",
            "",
        ),
        (
            f"batch models+blend rows/s ({b['threads']} threads, median of {b['repeats']})",
            f"{b['models_rows_per_s']:,.0f}",
            ">= 500,000",
        ),
        (
            "  xgb alone / iforest alone rows/s",
            f"{b['xgb_rows_per_s']:,.0f} / {b['iforest_rows_per_s']:,.0f}",
            "",
        ),
        (
            "batch features+models+reasons rows/s",
            f"{b['features_models_reasons_rows_per_s']:,.0f}",
            "",
        ),
        ("score_many(1000 requests) ms", f"{b['score_many_1000_ms']:.1f}", ""),
    ]
    for name, entry in (r.get("http") or {}).items():
        if not isinstance(entry, dict) or name in ("generator",):
            continue
        if "error" in entry:
            rows.append((f"http {name}", "error: " + entry["error"][:60], ""))
            continue
        c1, c16 = entry["c1"], entry["c16"]
        target = name.startswith("litestar_app")
        rows.append(
            (
                f"http {name} c=1 p50/p95/p99 (ms)",
                f"{c1['p50_ms']:.3f} / {c1['p95_ms']:.3f} / {c1['p99_ms']:.3f}",
                "p99 < 1" if target else "",
            )
        )
        rows.append(
            (
                f"http {name} c=16 req/s",
                f"{c16['rps']:,.0f} ({c16['errors']} errors)",
                ">= 3,000" if target else "",
            )
        )
        if "server_cpu_us_per_request" in c16:
            rows.append(
                (
                    "  server CPU per request at c=16 (us)",
                    f"{c16['server_cpu_us_per_request']:.0f}",
                    "",
                )
            )
        frozen = (r.get("http") or {}).get("litestar_app_frozen", {})
        if name == "litestar_app_redis" and "c16" in frozen:
            rows.append(
                (
                    "  redis c=16 / frozen c=16",
                    f"{c16['rps'] / frozen['c16']['rps']:.0%}",
                    ">= 70%",
                )
            )
            if "server_cpu_us_per_request" in c16 and "server_cpu_us_per_request" in frozen["c16"]:
                rows.append(
                    (
                        "  frozen / redis server CPU per request",
                        f"{frozen['c16']['server_cpu_us_per_request'] / max(c16['server_cpu_us_per_request'], 1e-9):.0%}",
                        "",
                    )
                )
        if "soak" in entry:
            s = entry["soak"]
            rows.append(
                (
                    "soak c=32 requests / errors / RSS growth",
                    f"{s['requests']:,} / {s['errors']} / {s['rss_growth_pct']:.2f}%",
                    "0 errors, < 5%",
                )
            )
    width = max(len(n) for n, _, _ in rows)
    print(f"\n{'measure':<{width}}  {'value':<34} target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<34} {target}")


if __name__ == "__main__":
    raise SystemExit(main())
