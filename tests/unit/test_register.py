"""register: the quality gate (pure), and the stage against an embedded SQLite MLflow
registry with tiny real models (alias moves only on pass, never after a failure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from published import publish_in_place

from components.contracts import bundle as B
from components.contracts import features as F
from components.contracts import storage
from components.contracts.blend import BlendParams, Thresholds
from components.register import logic

FLOORS = {"min_pr_auc": 0.5, "min_recall_at_1pct_fpr": 0.6, "max_regression": 0.02}


# ---------------------------------------------------------------- gate (pure)


def test_gate_passes_without_champion():
    d = logic.gate({"blend_pr_auc": 0.7, "blend_recall_at_1pct_fpr": 0.65}, None, **FLOORS)
    assert d.passed
    assert "no current champion" in d.reason


@pytest.mark.parametrize(
    ("candidate", "failing"),
    [
        ({"blend_pr_auc": 0.49, "blend_recall_at_1pct_fpr": 0.9}, "blend_pr_auc floor"),
        ({"blend_pr_auc": 0.9, "blend_recall_at_1pct_fpr": 0.59}, "blend_recall_at_1pct_fpr floor"),
        ({"blend_recall_at_1pct_fpr": 0.9}, "candidate metric missing"),
        ({"blend_pr_auc": float("nan"), "blend_recall_at_1pct_fpr": 0.9}, "missing"),
    ],
)
def test_gate_floors(candidate, failing):
    d = logic.gate(candidate, None, **FLOORS)
    assert not d.passed
    assert failing in d.reason
    assert d.reason.startswith("rejected:")


def test_gate_regression_against_champion():
    champion = {"blend_pr_auc": 0.80, "blend_recall_at_1pct_fpr": 0.70}
    ok = {"blend_pr_auc": 0.785, "blend_recall_at_1pct_fpr": 0.69}  # within 0.02
    bad = {"blend_pr_auc": 0.77, "blend_recall_at_1pct_fpr": 0.75}  # PR-AUC down 0.03
    assert logic.gate(ok, champion, **FLOORS).passed
    d = logic.gate(bad, champion, **FLOORS)
    assert not d.passed
    assert "blend_pr_auc vs champion 0.7700 < 0.7800" in d.reason
    # A champion without metrics does not block (and says so).
    d = logic.gate(ok, {}, **FLOORS)
    assert d.passed and "champion has no such metric" in d.reason


def _comparison(champion_hits: float, challenger_hits: float, n: int = 400, cashiers: int = 40):
    """Both models' flags on the same rows (all fraud), as ``compare.compare`` reports them."""
    from components.contracts.bootstrap import Blocks

    rng = np.random.default_rng(0)
    labels = np.ones(n, bool)
    blocks = Blocks(np.arange(n) % cashiers)
    old, new = rng.random(n) < champion_hits, rng.random(n) < challenger_hits
    return {
        "challenger": blocks.rate(new, labels),
        "champion": blocks.rate(old, labels),
        "difference": blocks.paired_difference(new, old, labels),
    }


def test_gate_decides_on_the_same_period_difference_beyond_noise():
    champion = {"blend_pr_auc": 0.99, "blend_recall_at_1pct_fpr": 0.99}  # another period
    ok = {"blend_pr_auc": 0.8, "blend_recall_at_1pct_fpr": 0.7}
    # Same rows: a small drop inside the noise passes, despite the recorded 0.99s ...
    close = _comparison(0.72, 0.70)
    d = logic.gate(ok, champion, **FLOORS, comparison=close)
    assert d.passed and close["difference"]["ci_low"] < 0 < close["difference"]["ci_high"] + 0.02
    assert "same test rows" in d.reason and "difference" in d.reason
    # ... a drop far beyond it is rejected, and both intervals are in the reason.
    far = _comparison(0.90, 0.50)
    d = logic.gate(ok, champion, **FLOORS, comparison=far)
    assert not d.passed and far["difference"]["ci_high"] < -0.02
    assert "candidate 0.5" in d.reason and "vs champion 0.8" in d.reason
    # Without a comparison the recorded metrics decide, and the gate says it is not the same period.
    d = logic.gate(ok, champion, **FLOORS, not_comparable="no valid-fixed threshold")
    assert not d.passed and "not the same period: no valid-fixed threshold" in d.reason


def test_paired_difference_is_tighter_than_the_separate_intervals():
    c = _comparison(0.70, 0.70)
    width = c["difference"]["ci_high"] - c["difference"]["ci_low"]
    separate = (c["challenger"]["ci_high"] - c["challenger"]["ci_low"]) + (
        c["champion"]["ci_high"] - c["champion"]["ci_low"]
    )
    assert c["difference"]["ci_low"] <= c["difference"]["value"] <= c["difference"]["ci_high"]
    assert width < separate


def test_gate_rejects_negative_regression_allowance():
    with pytest.raises(ValueError, match="max-regression"):
        logic.gate({}, None, min_pr_auc=0, min_recall_at_1pct_fpr=0, max_regression=-1)


def test_metric_tags_round_trip():
    tags = logic.metric_tags({"blend_pr_auc": 0.8123456789, "x": float("nan"), "n": 3})
    assert tags == {"metric.blend_pr_auc": "0.8123456789", "metric.n": "3.0"}
    assert logic.metrics_from_tags({**tags, "other": "1"}) == {
        "blend_pr_auc": 0.8123456789,
        "n": 3.0,
    }


def test_signature_requires_the_seed_fields_only():
    sig = logic.model_signature()
    required = {c.name for c in sig.inputs.inputs if c.required}
    seed_fields = "transaction_id cashier_id item_count total_amount void_count no_sale_count"
    assert required == {*seed_fields.split(), "weight_variance"}
    assert {"store_id", "timestamp", "lane_type"} <= set(sig.inputs.input_names())
    assert sig.outputs.input_names() == ["transaction_id", "risk_score", "risk_level", "action"]


# ---------------------------------------------------------------- stage on SQLite MLflow


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory) -> dict[str, Path]:
    """train-xgb / train-iforest / features-like inputs with tiny real models."""
    import xgboost
    from sklearn.ensemble import IsolationForest

    from components.contracts.forest import ForestArrays

    root = tmp_path_factory.mktemp("register-inputs")
    rng = np.random.default_rng(0)
    # Fit on real feature rows so the pyfunc's features look like the training data.
    state = F.ProfileState()
    n = 600
    raw = np.zeros((n, len(F.RAW_INPUTS)))
    raw[:, 0] = 1.768e9 + np.arange(n) * 60
    raw[:, 2] = rng.integers(1, 30, n)
    raw[:, 3] = raw[:, 2] * rng.uniform(2, 8, n)
    raw[:, 4] = rng.poisson(0.2, n)
    raw[:, 7] = rng.poisson(0.05, n)
    raw[:, 13] = rng.normal(0, 0.02, n)
    raw[:, 14] = raw[:, 2] * 0.45
    raw[:, 15] = raw[:, 2] * 3.5
    cashiers = [f"C{i % 5}" for i in range(n)]
    prior = state.advance(raw, cashiers, ["S1"] * n)
    X = F.compute_features(raw, prior)
    y = (raw[:, 4] + raw[:, 7]) >= 1
    xgb_dir, forest_dir, evaluation = root / "xgb", root / "iforest", root / "evaluation"
    for d in (xgb_dir, forest_dir, evaluation):
        d.mkdir()
    dm = xgboost.DMatrix(X, label=y, feature_names=list(F.FEATURE_NAMES))
    xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, dm, 10
    ).save_model(str(xgb_dir / "xgb.ubj"))
    forest = IsolationForest(n_estimators=20, max_samples=128, random_state=0).fit(X)
    ForestArrays.from_sklearn(forest).save(forest_dir / "forest.npz")
    pq.write_table(state.to_table(), root / "profiles.parquet")
    test_rows = {
        "subset": ["test"] * n,
        "is_fraud": y,
        "cashier_id": cashiers,
        **{name: X[:, j] for j, name in enumerate(F.FEATURE_NAMES)},
    }
    pq.write_table(pa.table(test_rows), root / "features.parquet")
    params = BlendParams(
        xgb_weight=1.0,
        iforest_weight=0.5,
        intercept=-1.0,
        iforest_center=0.45,
        iforest_scale=0.03,
        thresholds=Thresholds(high=80.0, medium=20.0),
        reference_histogram=tuple([0.05] * 20),
    )
    (evaluation / "blend.json").write_text(json.dumps(params.to_dict()))
    for output in (xgb_dir, forest_dir, root / "profiles.parquet", root / "features.parquet"):
        publish_in_place(output)  # stages refuse unpublished inputs
    return {
        "xgb": xgb_dir,
        "iforest": forest_dir,
        "evaluation": evaluation,
        "profiles": root / "profiles.parquet",
        "features": root / "features.parquet",
        "features_frauds": int(y.sum()),
        "rows": raw,
        "cashiers": cashiers,
    }


def _sha(folder: Path, name: str) -> str:
    return storage.open_output(str(folder)).files[name]["sha256"]


def model_digests(stage_inputs) -> dict[str, dict[str, str]]:
    """What evaluate records for the models it scored (``inputs.model_digests``)."""
    return {
        "xgb_model": {"xgb.ubj": _sha(stage_inputs["xgb"], "xgb.ubj")},
        "iforest_model": {"forest.npz": _sha(stage_inputs["iforest"], "forest.npz")},
    }


def _with_metrics(stage_inputs, tmp_path: Path, pr_auc: float, recall: float) -> Path:
    evaluation = tmp_path / f"evaluation-{pr_auc}-{recall}"
    evaluation.mkdir()
    (evaluation / "blend.json").write_bytes(
        (stage_inputs["evaluation"] / "blend.json").read_bytes()
    )
    summary = {"blend_pr_auc": pr_auc, "blend_recall_at_1pct_fpr": recall, "test_rows": 100.0}
    inputs = {"model_digests": model_digests(stage_inputs)}
    (evaluation / "metrics.json").write_text(json.dumps({"summary": summary, "inputs": inputs}))
    return publish_in_place(evaluation)


def _argv(stage_inputs, evaluation: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--in-xgb-model",
        str(stage_inputs["xgb"]),
        "--in-iforest-model",
        str(stage_inputs["iforest"]),
        "--in-evaluation",
        str(evaluation),
        "--in-profiles",
        str(stage_inputs["profiles"]),
        "--in-features",
        str(stage_inputs["features"]),
        "--out-bundle",
        str(out / "bundle"),
        "--out-decision",
        str(out / "decision.json"),
        *extra,
    ]


def _champion(name: str = "cashier-integrity-risk") -> str:
    import mlflow

    return str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version)


@pytest.mark.integration
def test_register_gate_and_alias(stage_inputs, tmp_path, local_env, monkeypatch):
    """Pass -> alias moves; impossible floors or a regression -> alias stays; a failure while
    logging -> no new version and alias stays; --fail-on-reject exits 1."""
    import mlflow
    import pandas as pd

    from components.register.__main__ import main, run

    monkeypatch.setenv("PIPELINE_RUN_ID", "test-run-1")
    good = _with_metrics(stage_inputs, tmp_path, 0.80, 0.70)
    first = main(_argv(stage_inputs, good, tmp_path / "r1"))
    assert first["passed"] and first["alias_moved"] and first["model_version"] == "1"
    assert _champion() == "1"
    decision = storage.read_json(str(tmp_path / "r1" / "decision.json"))
    assert decision["champion_after"] == "1" and decision["champion_before"] is None
    bundle = B.load_bundle(tmp_path / "r1" / "bundle")
    assert bundle.model_version == "1" and bundle.sha256 == decision["bundle_sha256"]
    assert bundle.manifest["model_version"] is None  # content-addressed: version in sidecar

    client = mlflow.MlflowClient()
    v1 = client.get_model_version("cashier-integrity-risk", "1")
    assert v1.tags["bundle_sha256"] == bundle.sha256
    assert v1.tags["pipeline_run_id"] == "test-run-1"
    assert v1.tags["gate_decision"] == "accepted"
    assert float(v1.tags["metric.blend_pr_auc"]) == 0.80

    # The registered pyfunc loads (models from code, no pickle) and scores raw rows.
    model = mlflow.pyfunc.load_model("models:/cashier-integrity-risk@champion")
    rows = pd.DataFrame(
        [
            {
                "transaction_id": "a",
                "cashier_id": "C1",
                "item_count": 10,
                "total_amount": 40.0,
                "void_count": 0,
                "no_sale_count": 0,
                "weight_variance": 0.0,
                "timestamp": "2026-01-20T10:00:00",
            },
            {
                "transaction_id": "b",
                "cashier_id": "unknown",
                "item_count": 3,
                "total_amount": 9.5,
                "void_count": 4,
                "no_sale_count": 3,
                "weight_variance": 0.4,
                "timestamp": "2026-01-20T23:30:00",
                "lane_type": "self_checkout",
            },
        ]
    )
    out = model.predict(rows)
    assert list(out["transaction_id"]) == ["a", "b"]
    assert out["risk_score"].between(0, 100).all()
    assert set(out["risk_level"]) <= {"Low Risk", "Medium Risk", "High Risk"}
    assert out["risk_score"][1] > out["risk_score"][0]
    # Same numbers as the bundle's own pieces.
    from components.contracts import blend as blend_mod

    raw = np.vstack([F.raw_row(r) for r in rows.to_dict("records")])
    idx = F.ProfileIndex.from_table(bundle.load_profiles())
    X = F.compute_features(raw, np.vstack([idx.prior_for(c) for c in rows["cashier_id"]]))
    import xgboost

    margin = bundle.load_xgb().predict(
        xgboost.DMatrix(X, feature_names=list(F.FEATURE_NAMES)), output_margin=True
    )
    expected = blend_mod.risk_score(margin, bundle.load_forest().score_samples(X), bundle.blend)
    np.testing.assert_allclose(out["risk_score"].to_numpy(), expected, rtol=1e-9)

    # Impossible floors: version 2 registered but rejected; alias stays on 1.
    second = main(_argv(stage_inputs, good, tmp_path / "r2", "--min-pr-auc", "0.99"))
    assert not second["passed"] and second["model_version"] == "2"
    assert "blend_pr_auc floor" in second["reason"]
    assert _champion() == "1"
    assert client.get_model_version("cashier-integrity-risk", "2").tags["gate_decision"] == (
        "rejected"
    )

    # Regression against the champion (PR-AUC 0.80 -> 0.75 > 0.02), with --fail-on-reject.
    worse = _with_metrics(stage_inputs, tmp_path, 0.75, 0.70)
    assert run(_argv(stage_inputs, worse, tmp_path / "r3", "--fail-on-reject")) == 1
    third = storage.read_json(str(tmp_path / "r3" / "decision.json"))
    assert "vs champion" in third["reason"] and third["champion_after"] == "1"
    assert _champion() == "1"
    # The pipeline passes its boolean parameter as a value: "false" keeps exit 0, "true" fails.
    assert run(_argv(stage_inputs, worse, tmp_path / "r3f", "--fail-on-reject", "false")) == 0
    assert run(_argv(stage_inputs, worse, tmp_path / "r3t", "--fail-on-reject", "true")) == 1
    assert _champion() == "1"

    # A failure while logging the model: non-zero, no new version, alias untouched.
    def boom(*args, **kwargs):
        raise RuntimeError("artifact store unavailable")

    monkeypatch.setattr(mlflow.pyfunc, "log_model", boom)
    better = _with_metrics(stage_inputs, tmp_path, 0.95, 0.95)
    with pytest.raises(RuntimeError, match="artifact store"):
        main(_argv(stage_inputs, better, tmp_path / "r4"))
    assert _champion() == "1"
    versions = client.search_model_versions("name = 'cashier-integrity-risk'")
    assert len(versions) == 5  # v1 accepted, v2-v5 rejected, none for the failed logging
    assert not (tmp_path / "r4").exists()


@pytest.mark.integration
def test_register_bad_input_is_one_line(stage_inputs, tmp_path, local_env, capsys):
    from components.register.__main__ import run

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "blend.json").write_text(json.dumps({"xgb_weight": 1.0}))
    metrics = {
        "summary": {"blend_pr_auc": 0.9},
        "inputs": {"model_digests": model_digests(stage_inputs)},
    }
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    publish_in_place(evaluation)
    assert run(_argv(stage_inputs, evaluation, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blend.json" in err[0] and "iforest_weight" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_gate_scores_the_champion_on_the_same_test_rows(stage_inputs, tmp_path, local_env):
    """The champion's registered bundle is downloaded and scores the challenger's test rows;
    each flags at its own valid-fixed threshold; the decision and tags record both intervals."""
    import mlflow

    from components.register.__main__ import main

    def evaluation(tag: str, threshold: float) -> Path:
        ev = tmp_path / f"evaluation-{tag}"
        ev.mkdir()
        blend_json = json.loads((stage_inputs["evaluation"] / "blend.json").read_text())
        params = BlendParams.from_dict(blend_json)
        params = params.with_(extra={"threshold_at_1pct_fpr": threshold})
        (ev / "blend.json").write_text(json.dumps(params.to_dict()))
        summary = {"blend_pr_auc": 0.8, "blend_recall_at_1pct_fpr": 0.7, "test_rows": 600.0}
        inputs = {"model_digests": model_digests(stage_inputs)}
        (ev / "metrics.json").write_text(json.dumps({"summary": summary, "inputs": inputs}))
        return publish_in_place(ev)

    assert main(_argv(stage_inputs, evaluation("flags-all", 0.0), tmp_path / "r1"))["passed"]
    # Same models, but a challenger flagging nothing: recall 0 vs 1 on the very same rows.
    worse = main(_argv(stage_inputs, evaluation("flags-none", 100.0), tmp_path / "r2"))
    assert not worse["passed"] and not worse["alias_moved"] and _champion() == "1"
    same = worse["same_period_comparison"]
    assert same["rows"] == 600 and same["frauds"] == int(stage_inputs["features_frauds"])
    assert same["champion"]["value"] == 1.0 and same["challenger"]["value"] == 0.0
    assert same["difference"]["ci_high"] == -1.0
    assert "same test rows" in worse["reason"]
    tags = mlflow.MlflowClient().get_model_version("cashier-integrity-risk", "2").tags
    assert tags["gate.champion_recall_at_1pct_fpr"] == "1.0000 [1.0000, 1.0000]"
    assert tags["gate.challenger_recall_at_1pct_fpr"] == "0.0000 [0.0000, 0.0000]"
    # An equal challenger is not worse beyond the noise: promoted.
    equal = main(_argv(stage_inputs, evaluation("flags-all-again", 0.0), tmp_path / "r3"))
    assert equal["passed"] and equal["same_period_comparison"]["difference"]["value"] == 0.0
    assert _champion() == "3"
