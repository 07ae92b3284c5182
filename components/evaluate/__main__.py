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

from components.contracts import cli, kfp_io, storage, tracking
from components.contracts import features as F
from components.contracts.layout import HISTORIC_SUBSETS, SUBSET_COLUMN
from components.contracts.schemas import LABELS, InputError
from components.contracts.settings import Settings
from components.contracts.training import check_features_table
from components.evaluate import logic, models, report
from components.evaluate.spec import SPEC

log = logging.getLogger(SPEC.name)

DEFAULT_NOVEL_TYPE = "scan_avoidance"
FEATURE_COLUMNS = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field(SUBSET_COLUMN, pa.string(), nullable=False),
        *(f for f in LABELS),
        *(pa.field(name, pa.float64(), nullable=False) for name in F.FEATURE_NAMES),
    ]
)
"""The feature-table columns evaluate reads (the table also carries ids, ignored here)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.build_parser(SPEC, extra=tracking.add_pipeline_run_id_arg).parse_args(argv)


# ---------------------------------------------------------------- inputs


def read_features(uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, subset, is_fraud, fraud_type) of the feature table, checked like training's."""
    table = storage.read_table(uri, FEATURE_COLUMNS)
    check_features_table(table, F.FEATURE_NAMES, source=uri)
    X = np.column_stack([table.column(n).to_numpy() for n in F.FEATURE_NAMES]).astype(np.float64)
    subset = table.column(SUBSET_COLUMN).to_numpy(zero_copy_only=False).astype(object)
    labels = table.column("is_fraud").to_numpy(zero_copy_only=False).astype(bool)
    fraud_type = table.column("fraud_type").to_numpy(zero_copy_only=False).astype(object)
    for name in HISTORIC_SUBSETS:
        if not np.any(subset == name):
            raise InputError(f"{uri}: column '{SUBSET_COLUMN}' has no '{name}' rows")
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


def evaluate(args: argparse.Namespace) -> logic.Evaluation:
    """Read the models and the feature table, then ``logic.evaluate_models`` (no output
    written); the metrics record the inputs and the sha256 of every model file scored."""
    xgb_dir, forest_dir = args.in_xgb_model, args.in_iforest_model
    files = models.ModelFiles()
    meta_bytes = files.read_optional("xgb_model", xgb_dir, "meta.json")
    xgb_meta = _parse_json(meta_bytes, storage.join(xgb_dir, "meta.json"))
    booster = models.load_booster(
        storage.join(xgb_dir, "xgb.ubj"), files.read("xgb_model", xgb_dir, "xgb.ubj")
    )
    novelty_uri = storage.join(xgb_dir, "novelty_xgb.ubj")
    novelty_bytes = files.read_optional("xgb_model", xgb_dir, "novelty_xgb.ubj")
    novelty = None if novelty_bytes is None else models.load_booster(novelty_uri, novelty_bytes)
    forest = models.load_forest(
        storage.join(forest_dir, "forest.npz"),
        files.read("iforest_model", forest_dir, "forest.npz"),
    )
    files.read_optional("iforest_model", forest_dir, "meta.json")
    novel_type = args.novel_fraud_type or xgb_meta.get("novel_fraud_type") or DEFAULT_NOVEL_TYPE
    if novelty is None:
        log.warning("%s missing", novelty_uri)

    X, subset, labels, fraud_type = read_features(args.in_features)
    result = logic.evaluate_models(
        X,
        subset,
        labels,
        fraud_type,
        logic.Scorers(
            xgb_margin=models.xgb_scorer(booster),
            forest_score=forest.score_samples,
            novelty_margin=None if novelty is None else models.xgb_scorer(novelty),
        ),
        high_precision_target=args.high_precision_target,
        medium_recall_target=args.medium_recall_target,
        novel_type=novel_type,
    )
    result.metrics["inputs"] = {
        "features": args.in_features,
        "xgb_model": xgb_dir,
        "iforest_model": forest_dir,
        "feature_version": F.FEATURE_VERSION,
        "model_digests": files.digests,
    }
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = evaluate(args)
    params, metrics, test = result.params, result.metrics, result.test
    summary = metrics["summary"]
    classification = kfp_io.classification_metrics(
        ["legitimate", "fraud"],
        logic.flagged_confusion(test.blend, test.labels, params.thresholds.medium),
        logic.roc_points(test.blend, test.labels),
    )
    settings = Settings.from_env()

    # evaluation folder, metrics and classification metrics: one commit, or none
    with storage.publish(SPEC.name) as pub:
        folder = pub.local_folder(args.out_evaluation)
        plots = report.write_plots(test, metrics, folder / "plots")
        (folder / "blend.json").write_text(json.dumps(params.to_dict(), indent=2, sort_keys=True))
        (folder / "metrics.json").write_text(
            json.dumps(logic.json_safe(metrics), indent=2, sort_keys=True)
        )
        (folder / "report.md").write_text(report.render_markdown(metrics))
        html = report.render_html(metrics, folder / "plots")
        with tracking.stage_run(
            settings.mlflow, SPEC.name, pipeline_run_id=args.pipeline_run_id
        ) as run:
            import mlflow

            tracking.log_params(
                {
                    "high_precision_target": args.high_precision_target,
                    "medium_recall_target": args.medium_recall_target,
                    "novel_fraud_type": (metrics["novelty"] or {}).get("fraud_type", "n/a"),
                    "in_features": args.in_features,
                },
                executor_input=args.executor_input,
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
    sys.exit(cli.run(SPEC.name, main))
