"""Build a small but real serving bundle in-process (tests, benchmarks, local demos).

It runs the same pieces as the pipeline on generated data - ``datagen`` logic, the shared
feature module (point-in-time profiles), XGBoost, an isolation forest flattened to
``ForestArrays``, ``thresholds.fit_channels`` - and writes a plain bundle folder (``bundle.build_bundle_files``).
The pipeline's stage CLIs produce the production bundle; this one exists so serving can
be tested and benchmarked without running them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.contracts import blend as blend_mod
from components.contracts import bundle as bundle_mod
from components.contracts import features as feats
from components.contracts import storage


@dataclass(frozen=True)
class DemoBundle:
    """A written bundle plus the data it was trained on (for parity tests)."""

    path: Path
    transactions: pa.Table
    features: np.ndarray
    xgb_path: Path


BRIEF_REQUEST = {
    "transaction_id": "T100",
    "cashier_id": "C001",
    "item_count": 12,
    "total_amount": 150.0,
    "void_count": 0,
    "no_sale_count": 0,
    "weight_variance": 0.1,
}
"""The product brief's ``POST /v1/predict`` request: its seven fields, nothing optional."""


def build_demo_bundle(
    out_dir: str | Path,
    *,
    rows: int = 6000,
    n_estimators: int = 60,
    max_depth: int = 5,
    iforest_trees: int = 50,
    seed: int = 7,
    rename_cashiers: Mapping[str, str] | None = None,
) -> DemoBundle:
    """Generate data, train both models and write a verified bundle to ``out_dir``.

    ``rename_cashiers`` maps generated cashier ids (``C0001``...) to other ids, e.g.
    non-ASCII ones, before profiles are built (ids are opaque text end to end).
    """
    import xgboost
    from sklearn.ensemble import IsolationForest

    from components.contracts.forest import ForestArrays
    from components.datagen.logic import DatagenParams, generate

    params = DatagenParams(
        rows=rows, days=14, stores=3, cashiers_per_store=5, fraud_rate=0.08, seed=seed
    )
    table = pa.concat_tables(list(generate(params)))
    if rename_cashiers:
        column = table.schema.get_field_index("cashier_id")
        renamed = [rename_cashiers.get(c, c) for c in table.column(column).to_pylist()]
        table = table.set_column(column, table.schema.field(column), pa.array(renamed))
    df = table.to_pandas()
    raw = feats.raw_matrix(table)
    state = feats.ProfileState()
    prior = state.advance(raw, df["cashier_id"].tolist(), df["store_id"].tolist())
    X = feats.compute_features(raw, prior)
    y = df["is_fraud"].to_numpy().astype(np.float64)
    n = X.shape[0]
    # The last 20% (the test period) is left unread: a demo bundle is fitted like a real one.
    train, valid = slice(0, int(n * 0.6)), slice(int(n * 0.6), int(n * 0.8))

    booster = xgboost.train(
        {
            "objective": "binary:logistic",
            "max_depth": max_depth,
            "eta": 0.2,
            "nthread": 1,
            "seed": seed,
        },
        xgboost.DMatrix(X[train], label=y[train], feature_names=list(feats.FEATURE_NAMES)),
        num_boost_round=n_estimators,
    )
    forest = IsolationForest(n_estimators=iforest_trees, max_samples=256, random_state=seed)
    forest.fit(X[train])

    def margins(rows: slice) -> np.ndarray:
        return booster.predict(
            xgboost.DMatrix(X[rows], feature_names=list(feats.FEATURE_NAMES)), output_margin=True
        )

    # The two-channel score and its thresholds, fitted on valid by evaluate's own rule.
    from components.evaluate.thresholds import fit_channels, robust_norms

    params_blend, _ = fit_channels(
        valid_margin=margins(valid),
        valid_iforest_score=forest.score_samples(X[valid]),
        valid_labels=y[valid],
        train_iforest_score=forest.score_samples(X[train]),
        high_precision_target=0.8,
        medium_recall_target=0.95,
        norms=robust_norms(X[train][y[train] == 0], feats.ANOMALY_FEATURES, feats.FEATURE_NAMES),
    )
    # The drift reference is the valid period's scores, as evaluate's (never the test rows).
    valid_scores = blend_mod.risk_score(
        margins(valid), forest.score_samples(X[valid]), params_blend
    )
    params_blend = params_blend.with_(reference_histogram=blend_mod.score_histogram(valid_scores))
    with tempfile.TemporaryDirectory(prefix="demo-bundle-src-") as tmp:
        src = Path(tmp)
        booster.save_model(str(src / "xgb.ubj"))
        ForestArrays.from_sklearn(forest).save(src / "forest.npz")
        storage.write_table(state.to_table(), str(src / "profiles.parquet"))
        out = Path(out_dir)
        out.mkdir(parents=True)  # a plain bundle folder, as MLflow or a baked image holds one
        bundle_mod.build_bundle_files(
            out,
            xgb_model=src / "xgb.ubj",
            forest=src / "forest.npz",
            profiles=src / "profiles.parquet",
            blend=params_blend,
            feature_names=feats.FEATURE_NAMES,
            feature_version=feats.FEATURE_VERSION,
            metrics={"demo": 1.0},
            model_name="cashier-integrity-risk-demo",
            model_version="0",
        )
        bundle_mod.load_bundle(out)
    return DemoBundle(path=out, transactions=table, features=X, xgb_path=out / "xgb.ubj")
