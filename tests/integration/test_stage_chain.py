"""All seven stage CLIs chained as subprocesses on ~50k generated rows with the embedded
SQLite MLflow: datagen -> split -> features -> train-xgb + train-iforest -> evaluate ->
register. Then the registry holds a ``champion`` whose artifacts carry a verified bundle,
the pyfunc scores the held-out live stream, an impossible gate leaves the alias where it
was, and a tampered bundle is refused.

``run_chain`` / ``Chain`` are reused by ``test_mlflow_server_registry.py`` and
``test_s3_chain.py`` (same chain, other tracking server / storage).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SERVICE_ENV_KEYS

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "cashier-integrity-risk"
# Small but real: enough trees to learn the patterns, few enough to stay fast on 2 cores.
XGB_FLAGS = ("--n-estimators", "120", "--early-stopping-rounds", "20", "--max-depth", "5")
IFOREST_FLAGS = ("--n-estimators", "80", "--max-samples", "256")


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


@dataclass(frozen=True)
class Chain:
    """Where one chain run put its outputs (local paths or s3:// URIs)."""

    root: str
    timings: dict[str, float]

    def __getattr__(self, name: str) -> str:
        layout = {
            "transactions": "transactions",
            "historic": "historic",
            "live_stream": "live/stream.jsonl",
            "live_labels": "live/labels.parquet",
            "time_splits": "time_splits.json",
            "features": "features/features.parquet",
            "profiles": "features/profiles.parquet",
            "xgb": "models/xgb",
            "iforest": "models/iforest",
            "evaluation": "evaluation",
            "metrics": "reports/metrics.json",
            "classification": "reports/classification.json",
            "report": "reports/report.html",
            "bundle": "bundle",
            "decision": "decision.json",
        }
        if name not in layout:
            raise AttributeError(name)
        return _join(self.root, layout[name])


def stage(
    module: str, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python -m components.<module> ...`` from the repo root; fail with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", f"components.{module}", *args],
        cwd=REPO,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{module} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def _env(base: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **(base if base is not None else os.environ),
        "PYTHONPATH": str(REPO),
        "PIPELINE_RUN_ID": "chain-test",
    }


def embedded_env(var_dir: Path) -> dict[str, str]:
    """``os.environ`` with the embedded defaults (like ``local_env``): SQLite MLflow, no S3."""
    skip = (*SERVICE_ENV_KEYS, "MODEL_NAME", "MLFLOW_EXPERIMENT_NAME")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["VAR_DIR"] = str(var_dir)
    return env


def run_chain(
    root: str, *, rows: int = 50_000, seed: int = 7, env: dict[str, str] | None = None
) -> Chain:
    """Run the seven stages into ``root`` (local folder or s3:// prefix).

    Args:
        root: Output folder or ``s3://`` prefix.
        rows: Generated transactions.
        seed: Generator seed.
        env: Environment of the stage processes (default ``os.environ``).
    """
    chain = Chain(root=root, timings={})
    env = _env(env)

    def timed(name, *procs):
        started = time.perf_counter()
        out = [p() for p in procs]
        chain.timings[name] = round(time.perf_counter() - started, 1)
        return out

    timed(
        "datagen",
        lambda: stage(
            "datagen",
            "--out-transactions",
            chain.transactions,
            "--rows",
            str(rows),
            "--seed",
            str(seed),
            env=env,
        ),
    )
    timed(
        "split",
        lambda: stage(
            "split",
            "--in-transactions",
            chain.transactions,
            "--out-historic",
            chain.historic,
            "--out-live-stream",
            chain.live_stream,
            "--out-live-labels",
            chain.live_labels,
            "--out-time-splits",
            chain.time_splits,
            env=env,
        ),
    )
    timed(
        "features",
        lambda: stage(
            "features",
            "--in-historic",
            chain.historic,
            "--in-time-splits",
            chain.time_splits,
            "--out-features",
            chain.features,
            "--out-profiles",
            chain.profiles,
            env=env,
        ),
    )

    def train_both():
        # The two trainers are independent (parallel branches of the pipeline).
        cmds = [
            ["train_xgb", "--in-features", chain.features, "--out-model", chain.xgb, *XGB_FLAGS],
            [
                "train_iforest",
                "--in-features",
                chain.features,
                "--out-model",
                chain.iforest,
                *IFOREST_FLAGS,
            ],
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", f"components.{c[0]}", *c[1:]],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for c in cmds
        ]
        for cmd, proc in zip(cmds, procs, strict=True):
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                pytest.fail(f"{cmd[0]} exited {proc.returncode}:\n{out[-2000:]}\n{err[-5000:]}")

    # Two processes creating a fresh SQLite MLflow store at once race on its schema
    # migration ("table _alembic_tmp_experiments already exists"): create it first.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from components.contracts import settings, tracking; "
            "tracking.configure(settings.Settings.from_env().mlflow)",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    timed("train", train_both)
    evaluate = timed(
        "evaluate",
        lambda: stage(
            "evaluate",
            "--in-features",
            chain.features,
            "--in-xgb-model",
            chain.xgb,
            "--in-iforest-model",
            chain.iforest,
            "--out-evaluation",
            chain.evaluation,
            "--out-metrics",
            chain.metrics,
            "--out-classification-metrics",
            chain.classification,
            "--out-report",
            chain.report,
            env=env,
        ),
    )[0]
    print(evaluate.stdout)
    timed("register", lambda: register(chain, *CHAIN_FLOORS, env=env))
    print("stage timings (s):", chain.timings)
    return chain


CHAIN_FLOORS = ("--min-pr-auc", "0.05", "--min-recall-at-1pct-fpr", "0.1")
"""Gate floors for this small chain's data (the default floors are set for the default
200k-row run; the chain checks the mechanics: promote, reject, keep the alias)."""


def register(
    chain: Chain,
    *extra: str,
    out: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
):
    out = out or chain.root
    return stage(
        "register",
        "--in-xgb-model",
        chain.xgb,
        "--in-iforest-model",
        chain.iforest,
        "--in-evaluation",
        chain.evaluation,
        "--in-profiles",
        chain.profiles,
        "--in-features",
        chain.features,
        "--out-bundle",
        _join(out, "bundle"),
        "--out-decision",
        _join(out, "decision.json"),
        *extra,
        env=env,
        check=check,
    )


def live_rows(chain: Chain, n: int = 3000):
    """The first ``n`` live-stream requests (timestamps stay ISO strings) and their labels."""
    import pandas as pd

    from components.contracts import storage

    raw = storage.read_bytes(chain.live_stream)
    frame = pd.read_json(io.BytesIO(raw), lines=True, dtype=False, convert_dates=False).head(n)
    labels = storage.read_table(chain.live_labels).to_pandas().set_index("transaction_id")
    return frame, labels.loc[frame["transaction_id"], "is_fraud"].to_numpy(dtype=bool)


def check_registry_and_pyfunc(
    chain: Chain,
    tracking_uri: str,
    tmp_path: Path,
    model_name: str = MODEL_NAME,
    out: str | None = None,
) -> str:
    """The champion's artifacts hold a verifying bundle; its pyfunc scores live rows well.

    Returns the champion's version.
    """
    import mlflow
    from sklearn.metrics import roc_auc_score

    from components.contracts import bundle as B
    from components.contracts import storage

    out = out or chain.root
    decision = storage.read_json(_join(out, "decision.json"))
    assert decision["passed"] and decision["alias_moved"], decision
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert str(champion.version) == decision["model_version"]
    assert champion.tags["bundle_sha256"] == decision["bundle_sha256"]
    assert champion.tags["pipeline_run_id"] == "chain-test"

    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{model_name}@champion", dst_path=str(tmp_path / "champion")
        )
    )
    bundle = B.load_bundle(local / "artifacts" / "bundle")
    assert bundle.sha256 == decision["bundle_sha256"]
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pickle"))
    published = tmp_path / "published-bundle"
    storage.download_dir(_join(out, "bundle"), published)
    assert B.load_bundle(published).model_version == decision["model_version"]

    model = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    frame, labels = live_rows(chain)
    scored = model.predict(frame)
    assert len(scored) == len(frame)
    assert list(scored["transaction_id"]) == list(frame["transaction_id"])
    assert scored["risk_score"].between(0, 100).all()
    assert set(scored["risk_level"]) <= {"Low Risk", "Medium Risk", "High Risk"}
    if labels.any():
        assert roc_auc_score(labels, scored["risk_score"]) > 0.7
    return str(champion.version)


_LOCAL_CHAIN: list[tuple[Chain, dict[str, str]]] = []


@pytest.fixture(scope="session")
def local_chain(tmp_path_factory) -> tuple[Chain, dict[str, str]]:
    """The chain on 50k rows with embedded defaults, run once per session: the local test
    checks it, the MLflow-server test registers its models against a real server. (The
    other module imports this fixture, which makes a second fixture definition: the module
    level cache keeps it to one chain run.)"""
    if not _LOCAL_CHAIN:
        root = tmp_path_factory.mktemp("stage-chain")
        env = embedded_env(root / "var")
        _LOCAL_CHAIN.append((run_chain(str(root / "run"), env=env), env))
    return _LOCAL_CHAIN[0]


@pytest.mark.integration
def test_stage_chain_local(local_chain, tmp_path, monkeypatch):
    from components.contracts import bundle as B
    from components.contracts import storage
    from components.contracts.settings import Settings

    chain, env = local_chain
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_LOCATION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VAR_DIR", env["VAR_DIR"])
    tracking_uri = Settings.from_env().mlflow.tracking_uri
    assert tracking_uri.startswith("sqlite:///") and env["VAR_DIR"] in tracking_uri

    metrics = storage.read_json(chain.metrics)
    # The generated world is hard on purpose (no pattern separable by one field, theft rare
    # per transaction; see components/datagen/README.md): the bounds say "learnt something"
    # (chance is ROC-AUC 0.5 and PR-AUC ~0.01, the fraud rate), not "scores well".
    assert metrics["blend_roc_auc"] > 0.7 and metrics["blend_pr_auc"] > 0.05
    assert Path(chain.report).read_text().count("data:image/png;base64,") >= 4
    version = check_registry_and_pyfunc(chain, tracking_uri, tmp_path)
    assert version == "1"

    # Impossible floors: a new version is registered and rejected; the alias stays; with
    # --fail-on-reject the stage exits 1 (after recording the decision).
    rejected = register(
        chain,
        "--min-pr-auc",
        "0.9999",
        "--fail-on-reject",
        out=str(tmp_path / "second"),
        check=False,
    )
    assert rejected.returncode == 1 and "rejected" in rejected.stderr
    assert "REJECTED" in rejected.stdout
    decision = storage.read_json(str(tmp_path / "second" / "decision.json"))
    assert not decision["passed"] and decision["model_version"] == "2"
    assert decision["champion_after"] == "1" and not decision["alias_moved"]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"

    # A tampered bundle file is refused, naming the file.
    tampered = tmp_path / "tampered"
    shutil.copytree(B.load_bundle(chain.bundle).root, tampered)  # the published version
    blend = json.loads((tampered / "blend.json").read_text())
    blend["thresholds"]["high"] = 99.0
    (tampered / "blend.json").write_text(json.dumps(blend))
    with pytest.raises(B.BundleError, match=r"blend\.json: sha256"):
        B.load_bundle(tampered)


def test_chain_layout_names_are_stable():
    """The layout helper is shared by three test modules; a typo must fail loudly."""
    chain = Chain(root="s3://b/p", timings={})
    assert chain.bundle == "s3://b/p/bundle"
    with pytest.raises(AttributeError):
        _ = chain.not_a_layout_entry
