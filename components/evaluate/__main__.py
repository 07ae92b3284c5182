"""evaluate: the two-channel 0-100 risk score (XGBoost + isolation forest), its thresholds
and the report.

Scores the feature table's subsets with both models, fits the two-channel score on VALID
(Platt-calibrated booster margin and standardized forest score, the false-alarm budget of
each operating point split between them: ``components.evaluate.thresholds``, the score
itself ``components.contracts.blend``), and counts on the time-held-out TEST subset:
ROC-AUC, PR-AUC, recall / precision / false-alarm rate at the valid-fixed 1% FPR point (with
cashier-block bootstrap intervals) overall, per fraud type, per cohort (seen vs unseen
cashiers), the bands, and the leave-one-type-out folds (``protocol.py``).

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from components.contracts import cli, kfp_io, storage, tracking
from components.contracts import features as F
from components.contracts.layout import HISTORIC_SUBSETS, SUBSET_COLUMN
from components.contracts.schemas import (
    COHORT_LABELS,
    LABELS,
    TIMESTAMP,
    InputError,
    validate_table,
)
from components.contracts.settings import Settings
from components.contracts.training import check_features_table
from components.evaluate import logic, models, protocol, report
from components.evaluate.spec import SPEC

log = logging.getLogger(SPEC.name)

COHORT_COLUMN = "cohort"
"""Optional label-side column of the feature table: each row's cohort (reported per value)."""
COHORT_DATES = pa.schema([pa.field("timestamp", TIMESTAMP), *COHORT_LABELS])
"""Optional feature-table columns the date cohorts derive from (``protocol.date_cohort_masks``)."""
FEATURE_COLUMNS = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("cashier_id", pa.string(), nullable=False),
        pa.field(SUBSET_COLUMN, pa.string(), nullable=False),
        *(f for f in LABELS),
        *(pa.field(name, pa.float64(), nullable=False) for name in F.FEATURE_NAMES),
    ]
)
"""The feature-table columns evaluate reads (the table also carries ids, ignored here)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.build_parser(SPEC, extra=tracking.add_pipeline_run_id_arg).parse_args(argv)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class FeatureRows:
    """The feature table as evaluate uses it."""

    X: np.ndarray
    subset: np.ndarray
    labels: np.ndarray
    fraud_type: np.ndarray
    cashier: np.ndarray
    cohorts: dict[str, np.ndarray]
    """Label-side cohorts: ``COHORT_COLUMN`` values and the date cohorts' row masks."""


def read_features(uri: str) -> FeatureRows:
    """The feature table's columns evaluate needs, checked like training's."""
    table = storage.read_table(uri)  # every column: the label-side ones are optional
    names = table.column_names
    schema = FEATURE_COLUMNS
    if COHORT_COLUMN in names:
        schema = schema.append(pa.field(COHORT_COLUMN, pa.string()))
    dated = all(n in names for n in COHORT_DATES.names)
    if dated:
        schema = pa.schema([*schema, *COHORT_DATES])
    table = validate_table(
        table.select([n for n in schema.names if n in names]), schema, source=uri
    )
    check_features_table(table, F.FEATURE_NAMES, source=uri)
    X = np.column_stack([table.column(n).to_numpy() for n in F.FEATURE_NAMES]).astype(np.float64)

    def column(name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False)

    subset = column(SUBSET_COLUMN).astype(object)
    labels = column("is_fraud").astype(bool)
    for name in HISTORIC_SUBSETS:
        if not np.any(subset == name):
            raise InputError(f"{uri}: column '{SUBSET_COLUMN}' has no '{name}' rows")
    for name in ("valid", "test"):
        if not labels[subset == name].any():
            raise InputError(f"{uri}: the {name} subset has no fraud rows (is_fraud)")
    cohorts = (
        {COHORT_COLUMN: column(COHORT_COLUMN).astype(object)} if COHORT_COLUMN in names else {}
    )
    if dated:
        cohorts |= protocol.date_cohort_masks(
            subset,
            column("timestamp"),
            column("cashier_hired_on"),
            column("cashier_turned_on"),
        )
    return FeatureRows(
        X, subset, labels, column("fraud_type").astype(object), column("cashier_id"), cohorts
    )


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
    folds = {}
    for fraud_type, fold in sorted((xgb_meta.get("loto") or {}).items()):
        name = fold["model_file"]
        folds[fraud_type] = models.xgb_scorer(
            models.load_booster(storage.join(xgb_dir, name), files.read("xgb_model", xgb_dir, name))
        )
    if not folds:
        log.warning(
            "%s lists no leave-one-type-out fold boosters", storage.join(xgb_dir, "meta.json")
        )
    forest = models.load_forest(
        storage.join(forest_dir, "forest.npz"),
        files.read("iforest_model", forest_dir, "forest.npz"),
    )
    forest_meta = _parse_json(
        files.read_optional("iforest_model", forest_dir, "meta.json"),
        storage.join(forest_dir, "meta.json"),
    )

    rows = read_features(args.in_features)
    result = logic.evaluate_models(
        rows.X,
        rows.subset,
        rows.labels,
        rows.fraud_type,
        rows.cashier,
        logic.Scorers(
            xgb_margin=models.xgb_scorer(booster),
            forest_score=forest.score_samples,
            fold_margins=folds,
            anomaly_features=tuple((forest_meta or {}).get("feature_names") or F.ANOMALY_FEATURES),
            feature_names=F.FEATURE_NAMES,
        ),
        high_precision_target=args.high_precision_target,
        medium_recall_target=args.medium_recall_target,
        label_cohorts=rows.cohorts,
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
        report.flagged_confusion(test.blend, test.labels, params.thresholds.medium),
        report.roc_points(test.blend, test.labels),
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
                    "loto_fraud_types": ",".join(metrics["leave_one_type_out"]) or "none",
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
    nan = float("nan")

    def ci(key: str) -> str:
        return (
            f"{s.get(key, nan):.3f} [{s.get(key + '_ci_low', nan):.3f}, "
            f"{s.get(key + '_ci_high', nan):.3f}]"
        )

    print(f"evaluate: test {int(s['test_rows']):,} rows, fraud rate {s['test_fraud_rate']:.2%}")
    print("  thresholds fixed on valid; test only counted; [95% cashier-block bootstrap]")
    print(f"  {'model':<8} {'ROC-AUC':>8} {'PR-AUC':>8}  recall @1% FPR          test FPR")
    for name in logic.MODELS:
        print(
            f"  {name:<8} {s.get(f'{name}_roc_auc', nan):>8.4f} {s.get(f'{name}_pr_auc', nan):>8.4f}"
            f"  {ci(f'{name}_recall_at_1pct_fpr')}  {s.get(f'{name}_false_alarm_rate_at_1pct_fpr', nan):.4f}"
        )
    for name, c in metrics["cohorts"].items():
        print(
            f"  {name:<16} {c['frauds']:>5} frauds: recall {ci(f'{name}_recall_at_1pct_fpr')}, "
            f"false alarms {ci(f'{name}_false_alarm_rate_at_1pct_fpr')}"
        )
    if "new_hire_false_alarm_ratio" in s:
        print(f"  new-hire false-alarm ratio (vs established): {ci('new_hire_false_alarm_ratio')}")
    print(
        f"  two channels: anomaly share of the false-alarm budget {s.get('anomaly_share', nan):.2f}"
    )
    print(
        f"  thresholds: High >= {t['high']:.2f} (test precision {ci('blend_high_precision')}), "
        f"Medium >= {t['medium']:.2f} (test recall {ci('blend_medium_recall')})"
    )
    print(
        f"  seed contract (only the seven brief fields sent): blend recall "
        f"{ci('seed_view_blend_recall_at_1pct_fpr')}, false alarms "
        f"{ci('seed_view_blend_false_alarm_rate_at_1pct_fpr')}, PR-AUC "
        f"{s.get('seed_view_blend_pr_auc', nan):.4f}; gap to full {ci('seed_view_recall_gap')}"
    )
    loto = metrics["leave_one_type_out"]
    if loto:
        print(
            "  leave-one-type-out recall @1% FPR: "
            + ", ".join(f"{k} {f['blend']['value']:.3f}" for k, f in loto.items())
            + f" (mean {s.get('loto_recall_mean', nan):.3f}, min {s.get('loto_recall_min', nan):.3f};"
            f" forest alone mean {s.get('loto_iforest_recall_mean', nan):.3f},"
            f" min {s.get('loto_iforest_recall_min', nan):.3f})"
        )


if __name__ == "__main__":
    sys.exit(cli.run(SPEC.name, main))
