"""register: build the serving bundle, register it in MLflow, gate the ``champion`` alias.

Steps (the alias moves last, so a failure anywhere earlier never moves it):

1. assemble and verify the bundle (``components.contracts.bundle``) from the model folders,
   the evaluation folder (blend.json, metrics.json) and the profiles;
2. in one MLflow run (stage ``register``): log the bundle as a pyfunc model with MLflow's
   models-from-code (``pyfunc_model.py`` + the bundle as artifact + the ``components``
   package as code; nothing cloudpickled) and register a new version of
   ``settings.mlflow.model_name`` tagged with the metrics, bundle sha256 and pipeline run id;
3. apply the quality gate (``components.register.logic.gate``) against the floors and the
   current champion's metrics (its ``metric.*`` version tags, else its run's metrics);
4. stage ``--out-bundle`` (bundle + ``registry.json`` with the version, listed in the
   manifest; the bundle's identity stays content-addressed);
5. on pass, move the alias; record the decision on the version (tags), in the run and in
   ``--out-decision``, and print it; ``--out-bundle`` and ``--out-decision`` are then
   published in one commit (``storage.publish``). ``--fail-on-reject`` makes a rejection
   exit 1.

Example:
    python -m components.register --in-xgb-model var/models/xgb \\
        --in-iforest-model var/models/iforest --in-evaluation var/evaluation \\
        --in-profiles var/profiles.parquet --out-bundle var/bundle --out-decision var/decision.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from components.contracts import bundle as B
from components.contracts import cli, storage, tracking
from components.contracts import features as F
from components.contracts.blend import BlendError, BlendParams
from components.contracts.settings import Settings
from components.register import logic

log = logging.getLogger("register")

COMPONENTS_DIR = Path(__file__).resolve().parents[1]
PYFUNC_FILE = Path(__file__).resolve().with_name("pyfunc_model.py")
MODEL_ARTIFACT = "model"
PIP_PACKAGES = ("mlflow", "xgboost-cpu", "numpy", "pandas", "pyarrow", "numba", "scikit-learn")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m components.register",
        description="Build the serving bundle, register it in the MLflow registry and move the "
        "champion alias only if the quality gate passes. MLflow locations come from the "
        "environment (MLFLOW_TRACKING_URI, MLFLOW_ARTIFACT_LOCATION, MODEL_NAME, CHAMPION_ALIAS).",
    )
    p.add_argument("--in-xgb-model", required=True, help="train-xgb output folder (xgb.ubj).")
    p.add_argument(
        "--in-iforest-model", required=True, help="train-iforest output folder (forest.npz)."
    )
    p.add_argument(
        "--in-evaluation", required=True, help="evaluate output folder (blend.json, metrics.json)."
    )
    p.add_argument(
        "--in-profiles", required=True, help="Profile table (Parquet) from the features stage."
    )
    p.add_argument(
        "--out-bundle", required=True, help="Output serving bundle folder (local or s3://)."
    )
    p.add_argument(
        "--out-decision",
        required=True,
        help="Output JSON: model version, gate checks, whether the alias moved.",
    )
    p.add_argument(
        "--min-pr-auc",
        type=float,
        default=0.5,
        help="Floor for the blend's test PR-AUC (default 0.5).",
    )
    p.add_argument(
        "--min-recall-at-1pct-fpr",
        type=float,
        default=0.6,
        help="Floor for the blend's test recall at 1%% FPR (default 0.6).",
    )
    p.add_argument(
        "--max-regression",
        type=float,
        default=0.02,
        help="Largest allowed drop of either gated metric vs the champion (default 0.02).",
    )
    p.add_argument(
        "--fail-on-reject",
        nargs="?",
        const=True,
        default=False,
        type=_truthy,
        metavar="true|false",
        help="Exit 1 when the gate rejects the model (default: exit 0, see decision). "
        "A bare flag means true; the pipeline passes its boolean parameter as a value.",
    )
    tracking.add_pipeline_run_id_arg(p)
    return p.parse_args(argv)


def _truthy(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


# ---------------------------------------------------------------- inputs


def _fetch(output: storage.Output, rel: str | None, dest: Path) -> Path:
    """Copy one file of a published input (local or s3://, sha256-checked) into ``dest``."""
    dest.write_bytes(output.read_bytes(rel))
    return dest


def build_local_bundle(args: argparse.Namespace, work: Path, model_name: str) -> B.Bundle:
    """Assemble and verify the bundle in ``work/bundle`` from the stage inputs."""
    inputs = work / "inputs"
    inputs.mkdir()
    evaluation = storage.open_output(args.in_evaluation)  # refuses anything unpublished
    xgb = _fetch(storage.open_output(args.in_xgb_model), B.XGB_FILE, inputs / B.XGB_FILE)
    forest = _fetch(
        storage.open_output(args.in_iforest_model), B.FOREST_FILE, inputs / B.FOREST_FILE
    )
    profiles = _fetch(storage.open_output(args.in_profiles), None, inputs / B.PROFILES_FILE)
    storage.read_table(str(profiles), F.PROFILE_SCHEMA, require_marker=False)  # validate first
    blend_uri = storage.join(args.in_evaluation, "blend.json")
    try:
        params = BlendParams.from_dict(evaluation.read_json("blend.json"))
    except BlendError as exc:
        raise ValueError(f"{blend_uri}: {exc}") from exc
    metrics_uri = storage.join(args.in_evaluation, "metrics.json")
    summary = evaluation.read_json("metrics.json").get("summary")
    if not isinstance(summary, dict) or not summary:
        raise ValueError(f"{metrics_uri}: no 'summary' metrics")
    folder = work / "bundle"
    folder.mkdir()
    try:
        B.build_bundle_files(
            folder,
            xgb_model=xgb,
            forest=forest,
            profiles=profiles,
            blend=params,
            feature_names=F.FEATURE_NAMES,
            feature_version=F.FEATURE_VERSION,
            metrics=summary,
            model_name=model_name,
        )
        return B.load_bundle(folder)
    except B.BundleError as exc:
        raise ValueError(str(exc)) from exc


def input_example(bundle: B.Bundle):
    """Two request-shaped rows (a known cashier, an unknown one) for the MLflow model."""
    import pandas as pd

    profiles = bundle.load_profiles().to_pandas()
    known = profiles.loc[profiles["level"] == "cashier"].iloc[0]
    base = {
        "item_count": 12,
        "total_amount": 54.3,
        "void_count": 0,
        "no_sale_count": 0,
        "weight_variance": 0.01,
        "timestamp": "2026-01-20T14:05:00",
    }
    return pd.DataFrame(
        [
            {
                **base,
                "transaction_id": "example-1",
                "cashier_id": known["key"],
                "store_id": known["home_store_id"],
            },
            {
                **base,
                "transaction_id": "example-2",
                "cashier_id": "new-cashier",
                "void_count": 3,
                "no_sale_count": 2,
                "lane_type": "self_checkout",
                "payment_type": "cash",
            },
        ]
    )


def pyfunc_code(work: Path) -> Path:
    """A ``components`` package with only ``contracts``: all the pyfunc imports at load time."""
    package = work / "code" / "components"
    shutil.copytree(
        COMPONENTS_DIR / "contracts",
        package / "contracts",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copyfile(COMPONENTS_DIR / "__init__.py", package / "__init__.py")
    return package


def pip_requirements() -> list[str]:
    reqs = []
    for name in PIP_PACKAGES:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            reqs.append(name)
    return reqs


# ---------------------------------------------------------------- registry


def champion_metrics(client, name: str, alias: str) -> tuple[str | None, dict[str, float] | None]:
    """(version, metrics) of the version holding ``alias``; (None, None) if none does."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    metrics = logic.metrics_from_tags(version.tags or {})
    if not all(k in metrics for k in logic.GATED_METRICS) and version.run_id:
        try:
            run_metrics = client.get_run(version.run_id).data.metrics
        except MlflowException:
            run_metrics = {}
        metrics = {**run_metrics, **metrics}
    return str(version.version), metrics


def register(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole stage; returns the decision dict (also written to ``--out-decision``)."""
    import mlflow

    settings = Settings.from_env()
    cfg = settings.mlflow
    name, alias = cfg.model_name, cfg.champion_alias
    work = Path(tempfile.mkdtemp(prefix="register-"))
    pub = storage.Publication("register")  # bundle and decision: one commit, or none
    try:
        bundle = build_local_bundle(args, work, name)
        candidate = bundle.metrics
        pipeline_run_id = tracking.pipeline_run_id(os.environ)
        with tracking.stage_run(cfg, "register") as run:
            client = mlflow.MlflowClient()
            mlflow.log_params(
                {
                    "min_pr_auc": args.min_pr_auc,
                    "min_recall_at_1pct_fpr": args.min_recall_at_1pct_fpr,
                    "max_regression": args.max_regression,
                    "bundle_sha256": bundle.sha256,
                }
            )
            mlflow.log_metrics({k: float(v) for k, v in candidate.items()})
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(PYFUNC_FILE),
                artifacts={"bundle": str(bundle.root)},
                code_paths=[str(pyfunc_code(work))],
                signature=logic.model_signature(),
                input_example=input_example(bundle),
                pip_requirements=pip_requirements(),
            )
            version = mlflow.register_model(
                info.model_uri,
                name,
                tags={
                    **logic.metric_tags(candidate),
                    "bundle_sha256": bundle.sha256,
                    "pipeline_run_id": pipeline_run_id,
                    "run_id": run.info.run_id,
                },
            )
            model_version = str(version.version)
            champion_version, champion = champion_metrics(client, name, alias)
            decision = logic.gate(
                candidate,
                champion,
                min_pr_auc=args.min_pr_auc,
                min_recall_at_1pct_fpr=args.min_recall_at_1pct_fpr,
                max_regression=args.max_regression,
            )
            record: dict[str, Any] = {
                "model_name": name,
                "model_version": model_version,
                "model_uri": f"models:/{name}/{model_version}",
                "run_id": run.info.run_id,
                "pipeline_run_id": pipeline_run_id,
                "bundle_sha256": bundle.sha256,
                "alias": alias,
                "champion_before": champion_version,
                **decision.to_dict(),
                "candidate_metrics": {k: candidate.get(k) for k in logic.GATED_METRICS},
                "champion_metrics": (
                    {k: champion.get(k) for k in logic.GATED_METRICS} if champion else None
                ),
            }
            publish_bundle(bundle, pub.local_folder(args.out_bundle), record)
            if decision.passed:
                client.set_registered_model_alias(name, alias, model_version)
            record["alias_moved"] = decision.passed
            record["champion_after"] = model_version if decision.passed else champion_version
            client.set_model_version_tag(
                name, model_version, "gate_decision", "accepted" if decision.passed else "rejected"
            )
            client.set_model_version_tag(name, model_version, "gate_reason", decision.reason[:5000])
            mlflow.set_tags(
                {
                    "gate_decision": "accepted" if decision.passed else "rejected",
                    "model_version": model_version,
                }
            )
            mlflow.log_dict(record, "decision.json")
        storage.write_json(record, pub.file(args.out_decision))
        pub.commit()
        return record
    finally:
        pub.abort()  # no-op once committed
        shutil.rmtree(work, ignore_errors=True)


def publish_bundle(bundle: B.Bundle, tmp: Path, record: dict[str, Any]) -> None:
    """Stage the verified bundle plus ``registry.json`` (listed in its manifest) in ``tmp``."""
    for rel in bundle.manifest["files"]:
        shutil.copyfile(bundle.root / rel, tmp / rel)
    shutil.copyfile(bundle.root / B.MANIFEST, tmp / B.MANIFEST)
    B.write_registry_sidecar(
        tmp,
        model_name=record["model_name"],
        model_version=record["model_version"],
        run_id=record["run_id"],
    )
    B.load_bundle(tmp)  # never publish a bundle that does not verify


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    tracking.use_pipeline_run_id(args.pipeline_run_id)
    record = register(args)
    verdict = "ACCEPTED" if record["passed"] else "REJECTED"
    print(
        f"register: {record['model_name']} version {record['model_version']} {verdict}; "
        f"{record['alias']} -> version {record['champion_after'] or 'none'}"
    )
    print(f"  {record['reason']}")
    print(
        json.dumps(
            {
                "decision": verdict.lower(),
                "model_version": record["model_version"],
                "alias_moved": record["alias_moved"],
            }
        )
    )
    return {**record, "fail_on_reject": args.fail_on_reject}


def run(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 ok, 2 bad input, 1 rejected with ``--fail-on-reject``."""
    outcome: dict[str, Any] = {}
    code = cli.run("register", lambda: outcome.update(main(argv)))
    if code == 0 and outcome.get("fail_on_reject") and not outcome.get("passed", True):
        print(
            f"register: error: model rejected by the quality gate ({outcome['reason']})",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(run())
