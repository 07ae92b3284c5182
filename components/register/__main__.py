"""register: build the serving bundle, register it in MLflow, gate the ``champion`` alias.

Steps (the alias moves last, so a failure anywhere earlier never moves it):

1. check that the model files are the ones evaluated: ``evaluate`` records the sha256 of
   every model file it scored in ``metrics.json`` (``inputs.model_digests``); a file with
   another digest (a truncated ``xgb.ubj``, another model beside a good evaluation) is
   refused, exit 2;
2. assemble and verify the bundle (``components.contracts.bundle``) from those exact bytes,
   the evaluation folder (blend.json, metrics.json) and the profiles;
3. load the bundle with the serving engine (``serving.model_loader``) and score a self-test
   batch; a bundle that would not serve is refused, exit 2. No registry write happened yet;
4. apply the quality gate (``components.register.logic.gate``) against the floors and the
   current champion scored on this run's test rows (``compare.py``; its recorded ``metric.*``
   version tags, else its run's metrics, when it cannot be scored);
5. in one MLflow run (stage ``register``): log the bundle as a pyfunc model with MLflow's
   models-from-code (``pyfunc_model.py`` + the bundle as artifact + the ``components``
   package as code; nothing cloudpickled) and register a new version of
   ``settings.mlflow.model_name`` created with its tags: metrics, bundle sha256, pipeline
   run id and the gate decision (so no version ever exists without one);
6. stage ``--out-bundle`` (bundle + ``registry.json`` with the version, listed in the
   manifest; the bundle's identity stays content-addressed);
7. on pass, move the alias; record the decision in the run and in ``--out-decision``, and
   print it; ``--out-bundle`` and ``--out-decision`` are then published in one commit
   (``storage.publish``). ``--fail-on-reject`` makes a rejection exit 1. A failure or
   SIGTERM between 5 and 7 re-tags the version ``gate_decision=aborted``.

Example:
    python -m components.register --in-xgb-model var/models/xgb \\
        --in-iforest-model var/models/iforest --in-evaluation var/evaluation \\
        --in-profiles var/profiles.parquet --out-bundle var/bundle --out-decision var/decision.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
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
from components.contracts.blend import LOW, BlendError, BlendParams
from components.contracts.schemas import InputError, validate_table
from components.contracts.settings import Settings
from components.contracts.storage import sha256_bytes
from components.register import compare, logic
from components.register.spec import SPEC

log = logging.getLogger(SPEC.name)

COMPONENTS_DIR = Path(__file__).resolve().parents[1]
PYFUNC_FILE = Path(__file__).resolve().with_name("pyfunc_model.py")
MODEL_ARTIFACT = "model"
PIP_PACKAGES = ("mlflow", "xgboost-cpu", "numpy", "pandas", "pyarrow", "numba", "scikit-learn")


DESCRIPTION = (
    "MLflow locations come from the environment (MLFLOW_TRACKING_URI, "
    "MLFLOW_ARTIFACT_LOCATION, MODEL_NAME, CHAMPION_ALIAS)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.build_parser(SPEC, DESCRIPTION, tracking.add_pipeline_run_id_arg)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- inputs


def _fetch(output: storage.Output, rel: str | None, dest: Path) -> str:
    """Copy one file of a published input (local or s3://, checked against its marker) into
    ``dest``; returns its sha256."""
    data = output.read_bytes(rel)
    dest.write_bytes(data)
    return sha256_bytes(data)


def _read_profiles(uri: str, dest: Path) -> None:
    """Copy the profile table to ``dest`` and validate it; errors name ``uri``, not the copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _fetch(storage.open_output(uri), None, dest)
    try:
        table = pq.read_table(dest)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{uri}: not a readable Parquet file ({exc})") from exc
    validate_table(table, F.PROFILE_SCHEMA, source=uri)


def build_local_bundle(args: argparse.Namespace, work: Path, model_name: str) -> B.Bundle:
    """Assemble and verify the bundle in ``work/bundle`` from the stage inputs.

    The model files are copied once; the copies' sha256 must equal what the evaluation
    recorded for the models it scored (``logic.check_digests``), and the copies are bundled.
    """
    inputs = work / "inputs"
    inputs.mkdir()
    evaluation = storage.open_output(args.in_evaluation)  # refuses anything unpublished
    metrics_uri = storage.join(args.in_evaluation, "metrics.json")
    metrics = evaluation.read_json("metrics.json")
    summary = metrics.get("summary") if isinstance(metrics, dict) else None
    if not isinstance(summary, dict) or not summary:
        raise InputError(f"{metrics_uri}: no 'summary' metrics")
    evaluated = logic.evaluated_digests(metrics, source=metrics_uri)
    folders = {"xgb_model": args.in_xgb_model, "iforest_model": args.in_iforest_model}
    bundled = {"xgb_model": B.XGB_FILE, "iforest_model": B.FOREST_FILE}
    actual: dict[str, dict[str, str | None]] = {}
    for role, folder in folders.items():
        output = storage.open_output(folder)
        actual[role] = {bundled[role]: _fetch(output, bundled[role], inputs / bundled[role])}
        for name in evaluated[role]:  # the other files evaluated (meta.json, novelty booster)
            if name != bundled[role]:
                actual[role][name] = (
                    sha256_bytes(output.read_bytes(name)) if output.has(name) else None
                )
    logic.check_digests(evaluated, actual, folders=folders, source=metrics_uri)
    profiles = inputs / B.PROFILES_FILE
    _read_profiles(args.in_profiles, profiles)
    blend_uri = storage.join(args.in_evaluation, "blend.json")
    try:
        params = BlendParams.from_dict(evaluation.read_json("blend.json"))
    except BlendError as exc:
        raise InputError(f"{blend_uri}: {exc}") from exc
    folder = work / "bundle"
    folder.mkdir()
    B.build_bundle_files(
        folder,
        xgb_model=inputs / B.XGB_FILE,
        forest=inputs / B.FOREST_FILE,
        profiles=profiles,
        blend=params,
        feature_names=F.FEATURE_NAMES,
        feature_version=F.FEATURE_VERSION,
        metrics=summary,
        model_name=model_name,
    )
    return B.load_bundle(folder)


def serving_self_test(bundle: B.Bundle, args: argparse.Namespace) -> dict[str, Any]:
    """Load the bundle with the serving engine and score a self-test batch, before any
    registry write: a bundle that would not serve is refused here (exit 2), not promoted.

    Uses ``serving.model_loader`` (the code that serves): compile the trees, load the
    profiles, score single rows and a batch, all scores finite, 0-100, single == batch.
    """
    from serving.model_loader import load_models, self_test, synthetic_request
    from serving.scorer import Scorer

    inputs = f"{args.in_xgb_model} + {args.in_iforest_model}"
    try:
        scorer = Scorer(load_models(bundle))
        report = self_test(scorer)
        base = synthetic_request(scorer)
        batch = [
            base,
            {**base, "transaction_id": "self-test-2", "cashier_id": "self-test-unknown"},
            {**base, "transaction_id": "self-test-3", "void_count": 4, "no_sale_count": 3,
             "weight_variance": -0.8, "lane_type": "self_checkout", "payment_type": "cash"},
        ]  # fmt: skip
        many = scorer.score_many(batch)
        for row, scored in zip(batch, many, strict=True):
            one = scorer.score_one(row).risk_score
            if not (math.isfinite(scored.risk_score) and 0.0 <= scored.risk_score <= 100.0):
                raise ValueError(f"risk score {scored.risk_score} outside 0-100")
            if one != scored.risk_score:
                raise ValueError(f"single-row score {one} != batch score {scored.risk_score}")
            if bundle.blend.anomaly and (scored.channel is None) != (scored.risk_level == LOW):
                raise ValueError(f"channel {scored.channel!r} at {scored.risk_level}")
    except Exception as exc:  # any failure to serve refuses the model; the cause is chained
        raise InputError(
            f"{inputs}: the bundle does not pass the serving self-test "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        ) from exc
    return {**report, "batch_scores": [m.risk_score for m in many]}


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
    """Run the whole stage; returns the decision dict (also written to ``--out-decision``).

    Order: bundle + digest check + serving self-test (no registry write yet); gate decision
    against the current champion; model logged and the version created WITH its
    ``gate_decision`` tag; bundle published; alias moved last (on pass). If anything fails or
    the stage is stopped after the version exists and before the alias moved, the version
    is re-tagged ``gate_decision=aborted`` (best effort: a SIGKILL is cleaned up by the next
    register, see ``abort_stale_versions``).
    """
    import mlflow

    settings = Settings.from_env()
    cfg = settings.mlflow
    name, alias = cfg.model_name, cfg.champion_alias
    work = Path(tempfile.mkdtemp(prefix="register-"))
    pub = storage.Publication(SPEC.name)  # bundle and decision: one commit, or none
    try:
        bundle = build_local_bundle(args, work, name)
        self_test = serving_self_test(bundle, args)
        log.info("serving self-test passed: %s", self_test)
        candidate = bundle.metrics
        pipeline_run_id = tracking.pipeline_run_id(os.environ, args.pipeline_run_id)
        with tracking.stage_run(cfg, SPEC.name, pipeline_run_id=args.pipeline_run_id) as run:
            client = mlflow.MlflowClient()
            abort_stale_versions(client, run.info.experiment_id, name, alias)
            champion_version, champion = champion_metrics(client, name, alias)
            comparison, why = (None, "")
            if champion_version is not None:
                comparison, why = compare.same_period(
                    bundle, f"models:/{name}/{champion_version}", args.in_features, work
                )
            decision = logic.gate(
                candidate,
                champion,
                min_pr_auc=args.min_pr_auc,
                min_recall_at_1pct_fpr=args.min_recall_at_1pct_fpr,
                max_regression=args.max_regression,
                comparison=comparison,
                not_comparable=why,
            )
            verdict = "accepted" if decision.passed else "rejected"
            tracking.log_params(
                {
                    "min_pr_auc": args.min_pr_auc,
                    "min_recall_at_1pct_fpr": args.min_recall_at_1pct_fpr,
                    "max_regression": args.max_regression,
                    "bundle_sha256": bundle.sha256,
                },
                kfp_inputs=[p.name for p in SPEC.kfp_params],
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
                    "gate_decision": verdict,
                    "gate_reason": decision.reason[:5000],
                    **compare.decision_tags(comparison),
                },
            )
            model_version = str(version.version)
            alias_moved = False
            try:
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
                    "same_period_comparison": comparison,
                    "serving_self_test": self_test,
                }
                publish_bundle(bundle, pub.local_folder(args.out_bundle), record)
                if decision.passed:
                    client.set_registered_model_alias(name, alias, model_version)
                    alias_moved = True
            except BaseException as exc:
                tag_aborted(client, name, model_version, f"{type(exc).__name__}: {exc}")
                raise
            record["alias_moved"] = alias_moved
            record["champion_after"] = model_version if alias_moved else champion_version
            mlflow.set_tags({"gate_decision": verdict, "model_version": model_version})
            mlflow.log_dict(record, "decision.json")
        storage.write_json(record, pub.file(args.out_decision))
        pub.commit()
        return record
    finally:
        pub.abort()  # no-op once committed
        shutil.rmtree(work, ignore_errors=True)


def tag_aborted(client, name: str, version: str, why: str) -> None:
    """Mark a version whose registration did not finish (alias not moved) ``aborted``.

    Best effort with a short retry budget: it runs while the stage is failing or stopping.
    """
    with tracking.quick_calls():
        try:
            client.set_model_version_tag(name, version, "gate_decision", "aborted")
            client.set_model_version_tag(
                name, version, "gate_reason", f"register did not finish: {why}"[:5000]
            )
        except Exception as exc:  # the registry itself may be what failed
            log.warning("could not tag %s version %s aborted: %s", name, version, exc)


CHECKED_TAG = "versions_checked"
"""Tag on a failed/killed register run once its versions were checked for ``aborted``."""


def abort_stale_versions(client, experiment_id: str, name: str, alias: str) -> None:
    """Versions created by register runs that failed or were killed (including runs a
    SIGKILL left RUNNING, which ``tracking.stage_run`` has just ended KILLED) and that do
    not hold ``alias`` are re-tagged ``gate_decision=aborted``; each run is checked once."""
    from mlflow.exceptions import MlflowException

    runs = client.search_runs(
        [experiment_id],
        "tags.stage = 'register' and attributes.status != 'FINISHED' "
        "and attributes.status != 'RUNNING'",
        max_results=100,
        order_by=["attributes.start_time DESC"],
    )
    runs = [r for r in runs if r.data.tags.get(CHECKED_TAG) != "true"]
    if not runs:
        return
    try:
        champion = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        champion = None
    for run in runs:
        run_id = run.info.run_id
        for mv in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
            if str(mv.version) != champion and (mv.tags or {}).get("gate_decision") != "aborted":
                tag_aborted(client, name, str(mv.version), f"run {run_id} ended {run.info.status}")
        client.set_tag(run_id, CHECKED_TAG, "true")


def publish_bundle(bundle: B.Bundle, tmp: Path, record: dict[str, Any]) -> None:
    """Stage the verified bundle plus ``registry.json`` (listed in its manifest) in ``tmp``."""
    # copy_verified verifies the copy: a bundle that does not verify is never published
    B.copy_verified(
        bundle,
        tmp,
        model_name=record["model_name"],
        model_version=record["model_version"],
        run_id=record["run_id"],
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
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
    code = cli.run(SPEC.name, lambda: outcome.update(main(argv)))
    if code == 0 and outcome.get("fail_on_reject") and not outcome.get("passed", True):
        print(
            f"register: error: model rejected by the quality gate ({outcome['reason']})",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(run())
