"""evaluate: blend XGBoost + isolation forest into one calibrated 0-100 risk score and report.

Scores the feature table's subsets with both models, fits the blend on VALID (logistic
regression on the XGBoost margin and the standardized forest score = blend + Platt
calibration; see ``components.contracts.blend``), picks the High / Medium thresholds on VALID
(see ``components.evaluate.logic``), and reports everything on the time-held-out TEST subset:
ROC-AUC, PR-AUC, recall at 1% FPR overall and per fraud type for each model and the blend,
the bands' precision/recall, and the novel-pattern check (a booster trained without one
fraud type, alone vs blended with the forest).

Example:
    python -m components.evaluate --in-features var/features.parquet \\
        --in-xgb-model var/models/xgb --in-iforest-model var/models/iforest \\
        --out-evaluation var/evaluation --out-metrics var/metrics.json \\
        --out-classification-metrics var/classification.json --out-report var/report.html
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import numpy as np
import pyarrow as pa

from components.contracts import blend, cli, kfp_io, storage, tracking
from components.contracts import features as F
from components.contracts.schemas import LABELS, InputError
from components.contracts.settings import Settings
from components.contracts.storage import sha256_bytes
from components.contracts.training import check_features_table
from components.evaluate import logic, report
from components.evaluate.component import SPEC

log = logging.getLogger("evaluate")

TRAIN_SCORE_SAMPLE = 50_000
"""Train rows (seeded sample) scored by the forest to fix the blend's center/scale."""
DEFAULT_NOVEL_TYPE = "scan_avoidance"
FEATURE_COLUMNS = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field(F.SUBSET_COLUMN, pa.string(), nullable=False),
        *(f for f in LABELS),
        *(pa.field(name, pa.float64(), nullable=False) for name in F.FEATURE_NAMES),
    ]
)
"""The feature-table columns evaluate reads (the table also carries ids, ignored here)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.build_parser(SPEC).parse_args(argv)


# ---------------------------------------------------------------- inputs


class ModelFiles:
    """Reads model files once and records the sha256 of the exact bytes that were scored.

    ``digests`` ({"xgb_model": {"xgb.ubj": sha256, ...}, "iforest_model": {...}}) goes into
    ``metrics.json`` (``inputs.model_digests``); ``register`` refuses a model whose files do
    not have these digests, so an evaluation is bound to the models it measured.
    """

    def __init__(self) -> None:
        self.digests: dict[str, dict[str, str]] = {}
        self._outputs: dict[str, storage.Output] = {}

    def _open(self, folder: str) -> storage.Output:
        # A published model folder: refused without its marker or with a modified file.
        if folder not in self._outputs:
            self._outputs[folder] = storage.open_output(folder)
        return self._outputs[folder]

    def read(self, role: str, folder: str, name: str) -> bytes:
        data = self._open(folder).read_bytes(name)  # checked against the marker's sha256
        self.digests.setdefault(role, {})[name] = sha256_bytes(data)
        return data

    def read_optional(self, role: str, folder: str, name: str) -> bytes | None:
        return self.read(role, folder, name) if self._open(folder).has(name) else None


def load_booster(uri: str, data: bytes | None = None):
    """An XGBoost booster from native UBJSON bytes (read from ``uri`` if not given)."""
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(storage.read_bytes(uri) if data is None else data))
    except xgboost.core.XGBoostError as exc:
        raise InputError(
            f"{uri}: not a readable XGBoost model ({str(exc).splitlines()[0]})"
        ) from exc
    names = booster.feature_names
    if names is not None and list(names) != list(F.FEATURE_NAMES):
        raise InputError(f"{uri}: model feature names differ from features.FEATURE_NAMES")
    if booster.num_features() != len(F.FEATURE_NAMES):
        raise InputError(
            f"{uri}: model expects {booster.num_features()} features, "
            f"FEATURE_NAMES has {len(F.FEATURE_NAMES)}"
        )
    return booster


def xgb_margin(booster, X: np.ndarray) -> np.ndarray:
    import xgboost

    dm = xgboost.DMatrix(X, feature_names=list(F.FEATURE_NAMES))
    return booster.predict(dm, output_margin=True).astype(np.float64)


def load_forest(uri: str, data: bytes | None = None):
    """The forest from ``forest.npz`` bytes (read from ``uri`` if not given), pickle-free."""
    import zipfile

    from components.contracts.forest import ForestArrays, ForestFormatError

    try:
        forest = ForestArrays.from_npz_bytes(
            storage.read_bytes(uri) if data is None else data, source=uri
        )
    except ForestFormatError as exc:
        raise InputError(str(exc)) from exc
    except zipfile.BadZipFile as exc:  # a damaged .npz (zip) archive
        raise InputError(f"{uri}: not a readable .npz file ({exc})") from exc
    if forest.n_features != len(F.FEATURE_NAMES):
        raise InputError(
            f"{uri}: forest expects {forest.n_features} features, "
            f"FEATURE_NAMES has {len(F.FEATURE_NAMES)}"
        )
    return forest


def read_features(uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, subset, is_fraud, fraud_type) of the feature table, checked like training's."""
    table = storage.read_table(uri, FEATURE_COLUMNS)
    check_features_table(table, F.FEATURE_NAMES, source=uri)
    X = np.column_stack([table.column(n).to_numpy() for n in F.FEATURE_NAMES]).astype(np.float64)
    subset = table.column(F.SUBSET_COLUMN).to_numpy(zero_copy_only=False).astype(object)
    labels = table.column("is_fraud").to_numpy(zero_copy_only=False).astype(bool)
    fraud_type = table.column("fraud_type").to_numpy(zero_copy_only=False).astype(object)
    for name in F.SUBSETS:
        if not np.any(subset == name):
            raise InputError(f"{uri}: column '{F.SUBSET_COLUMN}' has no '{name}' rows")
    for name in ("valid", "test"):
        if not labels[subset == name].any():
            raise InputError(f"{uri}: the {name} subset has no fraud rows (is_fraud)")
    return X, subset, labels, fraud_type


def _parse_json(data: bytes | None, uri: str) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{uri}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise InputError(f"{uri}: not a JSON object")
    return value


# ---------------------------------------------------------------- main


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Score, blend, choose thresholds and compute the report dict (no output written)."""
    xgb_dir, forest_dir = args.in_xgb_model, args.in_iforest_model
    files = ModelFiles()
    meta_bytes = files.read_optional("xgb_model", xgb_dir, "meta.json")
    xgb_meta = _parse_json(meta_bytes, storage.join(xgb_dir, "meta.json"))
    booster = load_booster(
        storage.join(xgb_dir, "xgb.ubj"), files.read("xgb_model", xgb_dir, "xgb.ubj")
    )
    novelty_uri = storage.join(xgb_dir, "novelty_xgb.ubj")
    novelty_bytes = files.read_optional("xgb_model", xgb_dir, "novelty_xgb.ubj")
    novelty_booster = None if novelty_bytes is None else load_booster(novelty_uri, novelty_bytes)
    forest = load_forest(
        storage.join(forest_dir, "forest.npz"),
        files.read("iforest_model", forest_dir, "forest.npz"),
    )
    files.read_optional("iforest_model", forest_dir, "meta.json")
    novel_type = args.novel_fraud_type or xgb_meta.get("novel_fraud_type") or DEFAULT_NOVEL_TYPE

    X, subset, labels, fraud_type = read_features(args.in_features)
    idx = {name: np.flatnonzero(subset == name) for name in F.SUBSETS}
    rng = np.random.default_rng(0)
    train_idx = idx["train"]
    if train_idx.size > TRAIN_SCORE_SAMPLE:
        train_idx = np.sort(rng.choice(train_idx, TRAIN_SCORE_SAMPLE, replace=False))
    log.info(
        "scoring: %d train (sample), %d valid, %d test rows",
        train_idx.size,
        idx["valid"].size,
        idx["test"].size,
    )
    train_forest = forest.score_samples(X[train_idx])
    forest_score = {s: forest.score_samples(X[idx[s]]) for s in ("valid", "test")}
    margin = {s: xgb_margin(booster, X[idx[s]]) for s in ("valid", "test")}

    params = blend.fit_blend(
        valid_margin=margin["valid"],
        valid_iforest_score=forest_score["valid"],
        valid_labels=labels[idx["valid"]],
        train_iforest_score=train_forest,
    )
    valid_risk = blend.risk_score(margin["valid"], forest_score["valid"], params)
    thresholds, threshold_info = logic.choose_thresholds(
        valid_risk,
        labels[idx["valid"]],
        high_precision_target=args.high_precision_target,
        medium_recall_target=args.medium_recall_target,
    )
    test_risk = blend.risk_score(margin["test"], forest_score["test"], params)
    params = params.with_(
        thresholds=thresholds,
        reference_histogram=blend.score_histogram(test_risk),
        extra={
            **params.extra,
            "high_precision_target": args.high_precision_target,
            "medium_recall_target": args.medium_recall_target,
            "reference": "test-subset risk scores",
        },
    )
    test = logic.Scored(
        labels=labels[idx["test"]],
        fraud_type=fraud_type[idx["test"]],
        xgb=margin["test"],
        iforest=-forest_score["test"],
        blend=test_risk,
    )

    novelty = None
    if novelty_booster is None:
        log.warning("%s missing: skipping the novel-pattern check", novelty_uri)
    elif not np.any(test.fraud_type == novel_type):
        log.warning("no %r rows in the test subset: skipping the novel-pattern check", novel_type)
    else:
        nov_margin = {s: xgb_margin(novelty_booster, X[idx[s]]) for s in ("valid", "test")}
        nov_params = blend.fit_blend(
            valid_margin=nov_margin["valid"],
            valid_iforest_score=forest_score["valid"],
            valid_labels=labels[idx["valid"]],
            train_iforest_score=train_forest,
        )
        novelty = logic.novelty_check(
            novel_type=novel_type,
            test=test,
            novelty_xgb_test=nov_margin["test"],
            novelty_blend_test=blend.risk_score(
                nov_margin["test"], forest_score["test"], nov_params
            ),
        )
        novelty["novelty_blend_weights"] = {
            "xgb_weight": nov_params.xgb_weight,
            "iforest_weight": nov_params.iforest_weight,
        }

    metrics = logic.summarize(
        test=test, params=params, threshold_info=threshold_info, novelty=novelty
    )
    metrics["inputs"] = {
        "features": args.in_features,
        "xgb_model": xgb_dir,
        "iforest_model": forest_dir,
        "feature_version": F.FEATURE_VERSION,
        "model_digests": files.digests,
    }
    return {"params": params, "metrics": metrics, "test": test}


def _json_safe(obj: Any) -> Any:
    """NaN -> None so the JSON is standard (json.dumps would write NaN)."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tracking.use_pipeline_run_id(args.pipeline_run_id)
    result = evaluate(args)
    params, metrics, test = result["params"], result["metrics"], result["test"]
    summary = metrics["summary"]
    classification = kfp_io.classification_metrics(
        ["legitimate", "fraud"],
        logic.flagged_confusion(test.blend, test.labels, params.thresholds.medium),
        logic.roc_points(test.blend, test.labels),
    )
    settings = Settings.from_env()

    # evaluation folder, metrics and classification metrics: one commit, or none
    with storage.publish("evaluate") as pub:
        folder = pub.local_folder(args.out_evaluation)
        plots = report.write_plots(test, metrics, folder / "plots")
        (folder / "blend.json").write_text(json.dumps(params.to_dict(), indent=2, sort_keys=True))
        (folder / "metrics.json").write_text(
            json.dumps(_json_safe(metrics), indent=2, sort_keys=True)
        )
        (folder / "report.md").write_text(report.render_markdown(metrics))
        html = report.render_html(metrics, folder / "plots")
        with tracking.stage_run(settings.mlflow, "evaluate") as run:
            import mlflow

            mlflow.log_params(
                {
                    "high_precision_target": args.high_precision_target,
                    "medium_recall_target": args.medium_recall_target,
                    "novel_fraud_type": (metrics["novelty"] or {}).get("fraud_type", "n/a"),
                    "in_features": args.in_features,
                }
            )
            mlflow.log_metrics(summary)
            mlflow.log_artifacts(str(folder), artifact_path="evaluation")
            mlflow.log_text(html, "evaluation/report.html")
            mlflow.log_dict(classification, "evaluation/classification_metrics.json")
            run_id = run.info.run_id
        log.info(
            "logged %d metrics and %d plots to MLflow run %s", len(summary), len(plots), run_id
        )

        if args.out_metrics:
            storage.write_json(summary, pub.file(args.out_metrics))
        if args.out_classification_metrics:
            storage.write_json(classification, pub.file(args.out_classification_metrics))
    if args.out_report:  # a view for people (KFP's HTML viewer needs a plain file): after
        storage.write_bytes(html.encode(), args.out_report)
    kfp_io.write_executor_output(
        args.executor_input,
        args.executor_output,
        {"metrics": summary, "classification_metrics": classification},
    )
    _print_summary(metrics)


def _print_summary(metrics: dict[str, Any]) -> None:
    s, t = metrics["summary"], metrics["thresholds"]
    print(f"evaluate: test {int(s['test_rows']):,} rows, fraud rate {s['test_fraud_rate']:.2%}")
    print(f"  {'model':<10} {'ROC-AUC':>8} {'PR-AUC':>8} {'R@1%FPR':>8}")
    for name in logic.MODELS:
        print(
            f"  {name:<10} {s.get(f'{name}_roc_auc', float('nan')):>8.4f} "
            f"{s.get(f'{name}_pr_auc', float('nan')):>8.4f} "
            f"{s.get(f'{name}_recall_at_1pct_fpr', float('nan')):>8.4f}"
        )
    print(
        f"  thresholds: High >= {t['high']:.2f} (test precision "
        f"{s.get('blend_high_precision', float('nan')):.3f}), Medium >= {t['medium']:.2f} "
        f"(test recall {s.get('blend_medium_recall', float('nan')):.3f})"
    )
    per_type = metrics["models"]["blend"]["recall_by_type_at_1pct_fpr"]
    print(
        "  blend recall @1% FPR by type: "
        + ", ".join(f"{k} {v:.3f}" for k, v in per_type.items() if v is not None)
    )
    nov = metrics.get("novelty")
    if nov:
        print(
            f"  novel pattern {nov['fraud_type']!r} caught @1% FPR: xgb alone "
            f"{nov['xgb_alone_recall_at_1pct_fpr']:.3f}, iforest alone "
            f"{nov['iforest_alone_recall_at_1pct_fpr']:.3f}, blend "
            f"{nov['novelty_blend_recall_at_1pct_fpr']:.3f}"
        )


if __name__ == "__main__":
    sys.exit(cli.run("evaluate", main))
