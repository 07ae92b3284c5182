"""evaluate: threshold rules and metrics on tiny arrays; the CLI on a tiny synthetic feature
table with small XGBoost / isolation-forest models trained here (no other stage needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from published import publish_in_place

from components.contracts import features as F
from components.contracts import storage
from components.contracts.blend import BlendParams
from components.contracts.layout import SUBSET_COLUMN
from components.evaluate import logic, report

NOVEL = "scan_avoidance"
KNOWN = ("sweethearting", "void_abuse", "refund_fraud")
FOLD_FILE = f"loto/{NOVEL}.ubj"


# ---------------------------------------------------------------- pure logic


TINY_FEATURES = ("item_count", "void_count")
"""The tiny table's two columns: required fields, so the seed-contract view masks nothing."""


def _tiny_table(n: int = 900, seed: int = 3):
    """Two features; fraud rows are high on feature 0 (and 'novel' ones on feature 1);
    30 cashiers, the last 10 only in test (unseen)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    subset = np.array(["train", "valid", "test"] * (n // 3), dtype=object)
    labels = rng.random(n) < 0.1
    fraud_type = np.where(labels, "void_abuse", "none").astype(object)
    fraud_type[labels & (np.arange(n) % 2 == 0)] = NOVEL
    X[labels, 0] += 3.0
    X[fraud_type == NOVEL, 1] += 3.0
    cashier = np.array([f"C{i % 20}" for i in range(n)], dtype=object)
    test = subset == "test"
    cashier[test] = [f"C{j % 30}" for j in range(int(test.sum()))]
    return X, subset, labels, fraud_type, cashier


def test_evaluate_models_is_pure_and_uses_the_given_scorers():
    """The algorithm runs on arrays and functions: no files, no models on disk."""
    X, subset, labels, fraud_type, cashier = _tiny_table()
    scored_rows = []

    def margin(rows):
        scored_rows.append(len(rows))
        return rows[:, 0] * 2.0

    result = logic.evaluate_models(
        X,
        subset,
        labels,
        fraud_type,
        cashier,
        logic.Scorers(
            xgb_margin=margin,
            forest_score=lambda rows: -np.abs(rows[:, 1]),
            fold_margins={NOVEL: lambda rows: rows[:, 0]},
        ),
        high_precision_target=0.8,
        medium_recall_target=0.95,
        feature_names=TINY_FEATURES,
    )
    assert scored_rows == [300, 300, 300]  # valid, test, test as seven fields: never train
    test = result.test
    assert test.labels.sum() == labels[subset == "test"].sum()
    assert result.params.thresholds.medium < result.params.thresholds.high
    assert list(result.metrics["leave_one_type_out"]) == [NOVEL]
    s = result.metrics["summary"]
    assert s["blend_pr_auc"] > 0.5
    assert s["blend_recall_at_1pct_fpr_ci_low"] <= s["blend_recall_at_1pct_fpr"]
    assert s["blend_recall_at_1pct_fpr"] <= s["blend_recall_at_1pct_fpr_ci_high"]
    cohorts = result.metrics["cohorts"]
    assert cohorts["seen_cashiers"]["rows"] == 200 and cohorts["unseen_cashiers"]["rows"] == 100


def test_evaluate_models_without_fold_boosters_reports_no_loto():
    X, subset, labels, fraud_type, cashier = _tiny_table()
    result = logic.evaluate_models(
        X,
        subset,
        labels,
        fraud_type,
        cashier,
        logic.Scorers(xgb_margin=lambda r: r[:, 0], forest_score=lambda r: -np.abs(r[:, 1])),
        high_precision_target=0.8,
        medium_recall_target=0.95,
        feature_names=TINY_FEATURES,
        train_sample=10,
    )
    assert result.metrics["leave_one_type_out"] == {}
    assert not any(k.startswith("loto_") for k in result.metrics["summary"])


def test_json_safe_turns_nan_into_null():
    assert logic.json_safe({"a": [float("nan"), 1.0], "b": (2,)}) == {"a": [None, 1.0], "b": [2]}


def test_threshold_at_fpr_respects_ties_and_rate():
    neg = np.r_[np.arange(100, dtype=float), [99.0, 99.0]]  # 102 negatives, a tie at the top
    pos = np.array([99.0, 100.0, 50.0])
    scores = np.r_[neg, pos]
    labels = np.r_[np.zeros(neg.size, bool), np.ones(pos.size, bool)]
    t = logic.threshold_at_fpr(scores, labels, fpr=0.01)  # 1 negative allowed, but 3 tie at 99
    assert np.mean(neg >= t) <= 0.01
    assert 99.0 < t <= 100.0
    assert logic.recall_at(scores, labels, t) == pytest.approx(1 / 3)


def test_choose_thresholds_rules():
    # Valid scores: positives at 90..99 (10), negatives spread 0..89 plus two high ones.
    pos = np.arange(90, 100, dtype=float)
    neg = np.r_[np.linspace(0, 89, 300), [95.5, 97.5]]
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    t, info = logic.choose_thresholds(
        scores, labels, high_precision_target=0.8, medium_recall_target=0.9
    )
    # High: lowest score with precision >= 0.8: at 90 precision = 10/12 = 0.83.
    assert t.high == 90.0
    assert logic.precision_at(scores, labels, t.high) >= 0.8
    # Medium: highest score with recall >= 0.9 is 91 (9 of 10), which is not below High?
    # It is above High, so Medium falls just below High.
    assert t.medium < t.high
    assert "below High" in info["medium_rule"]


def test_choose_thresholds_medium_below_high_when_recall_needs_lower_scores():
    rng = np.random.default_rng(0)
    pos = np.r_[rng.uniform(60, 100, 80), rng.uniform(5, 60, 20)]
    neg = rng.beta(2, 10, 5000) * 100
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    t, _ = logic.choose_thresholds(
        scores, labels, high_precision_target=0.8, medium_recall_target=0.95
    )
    assert t.medium < t.high
    assert logic.recall_at(scores, labels, t.medium) >= 0.95
    assert logic.recall_at(scores, labels, np.nextafter(t.medium, 200)) < 0.95
    assert logic.precision_at(scores, labels, t.high) >= 0.8


@pytest.mark.parametrize("bad", [0.0, 1.5])
def test_choose_thresholds_rejects_bad_targets(bad):
    with pytest.raises(ValueError, match="target"):
        logic.choose_thresholds(
            np.arange(4.0),
            np.array([0, 0, 1, 1], bool),
            high_precision_target=bad,
            medium_recall_target=0.9,
        )


def test_recall_by_type_and_confusion():
    scores = np.array([90.0, 10.0, 80.0, 5.0, 50.0])
    types = np.array(["void_abuse", "void_abuse", "sweethearting", "none", "none"], dtype=object)
    rec = logic.recall_by_type(scores, types, 60.0)
    assert rec["void_abuse"] == 0.5 and rec["sweethearting"] == 1.0
    assert rec["refund_fraud"] is None
    labels = types != "none"
    assert report.flagged_confusion(scores, labels, 60.0) == [[2, 0], [1, 2]]


def test_pr_and_roc_auc_perfect_and_nan():
    y = np.array([0, 0, 1, 1], bool)
    assert logic.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert logic.pr_auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert math.isnan(logic.roc_auc(np.array([0.1, 0.2]), np.array([0, 0], bool)))


# ---------------------------------------------------------------- CLI on synthetic inputs


def synthetic_features(n: int = 6000, seed: int = 0, cohort_dates: dict | None = None) -> pa.Table:
    """A FEATURE_TABLE_SCHEMA table: known fraud types shift shared columns; the novel type
    shifts a column no known type uses (so a booster that never saw it cannot learn it).
    The cohort label columns are null unless ``cohort_dates`` gives them (column -> values)."""
    from components.features.logic import FEATURE_TABLE_SCHEMA

    rng = np.random.default_rng(seed)
    X = np.abs(rng.standard_normal((n, len(F.FEATURE_NAMES))))  # some are non-negative
    types = np.full(n, "none", dtype=object)
    fraud_idx = rng.choice(n, size=n // 12, replace=False)
    choice = np.array([*KNOWN, NOVEL], dtype=object)
    types[fraud_idx] = choice[np.arange(fraud_idx.size) % choice.size]
    for j, name in enumerate(KNOWN):
        X[types == name, j] += 2.6
        X[types == name, 10] += 1.0
    X[np.ix_(types == NOVEL, np.arange(20, 45))] += 4.0
    subset = np.where(
        np.arange(n) < n * 0.55, "train", np.where(np.arange(n) < n * 0.75, "valid", "test")
    )
    ts = np.datetime64("2026-01-05T08:00:00") + np.arange(n).astype("timedelta64[m]")
    cols = {
        "transaction_id": [f"t{i}" for i in range(n)],
        "timestamp": ts.astype("datetime64[us]"),
        "store_id": ["S01"] * n,
        "cashier_id": [f"C{i % 7}" for i in range(n)],
        SUBSET_COLUMN: subset,
        "is_fraud": types != "none",
        "fraud_type": types,
        **(cohort_dates or {}),
    }
    head = [f for f in FEATURE_TABLE_SCHEMA if f.name not in F.FEATURE_NAMES]
    arrays = [pa.array(cols.get(f.name, [None] * n), type=f.type) for f in head]
    arrays += [pa.array(X[:, j]) for j in range(X.shape[1])]
    return pa.Table.from_arrays(arrays, schema=FEATURE_TABLE_SCHEMA)


def train_models(table: pa.Table, out: Path) -> tuple[Path, Path]:
    """Write train-xgb-like and train-iforest-like output folders trained on ``table``."""
    import xgboost
    from sklearn.ensemble import IsolationForest

    from components.contracts.forest import ForestArrays

    X = np.column_stack([table.column(c).to_numpy() for c in F.FEATURE_NAMES])
    y = table.column("is_fraud").to_numpy(zero_copy_only=False)
    types = table.column("fraud_type").to_numpy(zero_copy_only=False)
    train = table.column(SUBSET_COLUMN).to_numpy(zero_copy_only=False) == "train"
    xgb_dir, forest_dir = out / "xgb", out / "iforest"
    xgb_dir.mkdir(parents=True)
    forest_dir.mkdir(parents=True)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1}
    (xgb_dir / "loto").mkdir()
    for name, mask in (("xgb.ubj", train), (FOLD_FILE, train & (types != NOVEL))):
        dm = xgboost.DMatrix(X[mask], label=y[mask], feature_names=list(F.FEATURE_NAMES))
        xgboost.train(params, dm, num_boost_round=30).save_model(str(xgb_dir / name))
    (xgb_dir / "meta.json").write_text(json.dumps({"loto": {NOVEL: {"model_file": FOLD_FILE}}}))
    forest = IsolationForest(n_estimators=50, max_samples=256, random_state=0).fit(X[train])
    ForestArrays.from_sklearn(forest).save(forest_dir / "forest.npz")
    return xgb_dir, forest_dir


@pytest.fixture(scope="module")
def synthetic_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate-inputs")
    table = synthetic_features()
    import pyarrow.parquet as pq

    pq.write_table(table, root / "features.parquet")
    xgb_dir, forest_dir = train_models(table, root)
    for output in (root / "features.parquet", xgb_dir, forest_dir):
        publish_in_place(output)  # stages refuse unpublished inputs
    return root / "features.parquet", xgb_dir, forest_dir


def _executor_input(tmp_path: Path) -> str:
    def art(name):
        return {"artifacts": [{"name": name, "uri": str(tmp_path / name), "metadata": {}}]}

    return json.dumps(
        {
            "outputs": {
                "artifacts": {
                    n: art(n) for n in ("evaluation", "metrics", "classification_metrics", "report")
                }
            }
        }
    )


def test_cli_writes_every_output(synthetic_inputs, tmp_path, local_env):
    from components.evaluate.__main__ import main

    features, xgb_dir, forest_dir = synthetic_inputs
    out = tmp_path / "evaluation"
    main(
        [
            "--in-features",
            str(features),
            "--in-xgb-model",
            str(xgb_dir),
            "--in-iforest-model",
            str(forest_dir),
            "--out-evaluation",
            str(out),
            "--out-metrics",
            str(tmp_path / "metrics.json"),
            "--out-classification-metrics",
            str(tmp_path / "cls.json"),
            "--out-report",
            str(tmp_path / "report.html"),
            "--executor-input",
            _executor_input(tmp_path),
            "--executor-output",
            str(tmp_path / "executor_output.json"),
        ]
    )
    assert (out / "_SUCCESS").is_file()
    out = Path(storage.open_output(str(out)).path())  # the published version's folder
    params = BlendParams.from_dict(json.loads((out / "blend.json").read_text()))
    assert params.thresholds is not None and params.thresholds.medium < params.thresholds.high
    assert sum(params.reference_histogram) == pytest.approx(1.0)
    assert params.xgb_weight > 0

    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["summary"]
    assert s["blend_pr_auc"] > 0.8 and s["blend_roc_auc"] > 0.9
    assert s["blend_recall_at_1pct_fpr"] > 0.6
    # Leave NOVEL out: a booster that never saw it misses it; the forest alone catches it.
    assert s[f"loto_xgb_recall_{NOVEL}"] < 0.3
    assert s[f"loto_iforest_recall_{NOVEL}"] > s[f"loto_xgb_recall_{NOVEL}"] + 0.4
    assert s["loto_recall_min"] == s[f"loto_recall_{NOVEL}"]
    for plot in ("pr_curves", "roc_curves", "score_distribution", "risk_levels", "recall_by_type"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Leave one fraud type out" in (out / "report.md").read_text()

    # Bound to the exact files it scored: register refuses any other bytes.
    def sha(folder, name):  # the digest the published model's marker records
        return storage.open_output(str(folder)).files[name]["sha256"]

    assert metrics["inputs"]["model_digests"] == {
        "xgb_model": {n: sha(xgb_dir, n) for n in ("xgb.ubj", "meta.json", FOLD_FILE)},
        "iforest_model": {"forest.npz": sha(forest_dir, "forest.npz")},
    }

    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<table>" in html
    flat = storage.read_json(str(tmp_path / "metrics.json"))
    assert flat == s
    cls = storage.read_json(str(tmp_path / "cls.json"))
    rows = cls["confusionMatrix"]["rows"]
    assert sum(sum(r["row"]) for r in rows) == int(s["test_rows"])
    assert len(cls["confidenceMetrics"]) >= 3
    executor = json.loads((tmp_path / "executor_output.json").read_text())
    assert (
        executor["artifacts"]["metrics"]["artifacts"][0]["metadata"]["blend_pr_auc"]
        == (s["blend_pr_auc"])
    )
    assert (
        "confusionMatrix"
        in (executor["artifacts"]["classification_metrics"]["artifacts"][0]["metadata"])
    )

    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.stage = 'evaluate'")
    assert len(runs) == 1
    assert runs.iloc[0]["metrics.blend_pr_auc"] == pytest.approx(s["blend_pr_auc"])
    client = mlflow.MlflowClient()
    logged = {a.path for a in client.list_artifacts(runs.iloc[0]["run_id"], "evaluation")}
    assert {"evaluation/blend.json", "evaluation/plots", "evaluation/report.html"} <= logged


def test_cli_bad_model_is_one_line_error_and_no_output(
    synthetic_inputs, tmp_path, local_env, capsys
):
    from components.contracts import cli
    from components.evaluate.__main__ import main

    features, _, forest_dir = synthetic_inputs
    bad = tmp_path / "bad-xgb"
    bad.mkdir()
    (bad / "xgb.ubj").write_bytes(b"not a model")
    publish_in_place(bad)
    out = tmp_path / "evaluation"
    code = cli.run(
        "evaluate",
        lambda: main(
            [
                "--in-features",
                str(features),
                "--in-xgb-model",
                str(bad),
                "--in-iforest-model",
                str(forest_dir),
                "--out-evaluation",
                str(out),
            ]
        ),
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xgb.ubj" in err[0]
    assert not out.exists()


def test_read_features_picks_up_an_optional_cohort_column(tmp_path):
    """A label-side ``cohort`` column (from a richer generator) is reported per value."""
    import pyarrow.parquet as pq

    from components.evaluate.__main__ import COHORT_COLUMN, read_features

    table = synthetic_features(600)
    values = pa.array(["new_hire" if i % 3 else "established" for i in range(table.num_rows)])
    pq.write_table(table.append_column(COHORT_COLUMN, values), tmp_path / "f.parquet")
    rows = read_features(str(publish_in_place(tmp_path / "f.parquet")))
    assert set(rows.cohorts[COHORT_COLUMN]) == {"new_hire", "established"}
    assert rows.cashier.shape == rows.labels.shape
    pq.write_table(table, tmp_path / "g.parquet")
    assert read_features(str(publish_in_place(tmp_path / "g.parquet"))).cohorts == {}
