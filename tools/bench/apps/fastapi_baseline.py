"""Brief-style baseline: FastAPI + pandas one-row DataFrame + sklearn-API models.

    MODEL_DIR=<bundle> uvicorn --factory tools.bench.apps.fastapi_baseline:create_app

What the product brief's sketch would serve: XGBClassifier.predict_proba on a one-row
DataFrame and an IsolationForest of the bundle's size (fitted at start: the bundle carries
no pickle), blended with the project's blend. Needs the test extra (fastapi).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from fastapi import FastAPI
from pydantic import BaseModel
from sklearn.ensemble import IsolationForest
from xgboost import XGBClassifier

from components.contracts import blend as B
from components.contracts import features as F
from components.contracts.bundle import load_bundle


class Transaction(BaseModel):
    transaction_id: str
    cashier_id: str
    item_count: int
    total_amount: float
    void_count: int
    no_sale_count: int
    weight_variance: float
    timestamp: str | None = None
    store_id: str | None = None
    lane_type: str | None = None
    payment_type: str | None = None


def create_app() -> FastAPI:
    """Load ``MODEL_DIR``'s bundle, fit the forest (``IFOREST_TREES`` trees) and build the app."""
    bundle = load_bundle(os.environ["MODEL_DIR"])
    clf = XGBClassifier()
    clf.load_model(str(bundle.xgb_path))
    if hasattr(bundle, "load_profiles"):
        profiles = F.ProfileIndex.from_table(bundle.load_profiles())
    else:
        profiles = F.ProfileIndex.from_table(pq.read_table(bundle.profiles_path))
    n_trees = int(os.environ.get("IFOREST_TREES", "100"))
    iforest = IsolationForest(n_estimators=n_trees, max_samples=256, random_state=0).fit(
        np.random.default_rng(0).normal(size=(2000, len(F.FEATURE_NAMES)))
    )
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(tx: Transaction):
        t0 = time.perf_counter()
        given = {k: v for k, v in tx.model_dump().items() if v is not None}
        row = {
            # The baseline's own fill-ins (sklearn's forest rejects the NaN a missing field is).
            "lane_type": "staffed",
            "void_amount": 0.0,
            "post_payment_void": False,
            "refund_amount": 0.0,
            "refund_no_receipt": False,
            "discount_amount": 0.0,
            "price_override_count": 0,
            "payment_type": "card",
            "lane_id": "L1",
            "basket_weight_kg": 0.45 * tx.item_count,
            "scan_duration_s": 3.5 * tx.item_count,
            **given,
        }
        raw = F.raw_matrix(pd.DataFrame([row]))
        prior = profiles.prior_for(tx.cashier_id, tx.store_id)[None, :]
        X = pd.DataFrame(F.compute_features(raw, prior), columns=list(F.FEATURE_NAMES))
        proba = clf.predict_proba(X)[:, 1]
        anomaly = iforest.decision_function(X.to_numpy())
        margin = np.log(proba / (1 - proba))
        score = float(B.risk_score(margin, anomaly + iforest.offset_, bundle.blend)[0])
        level = B.risk_level(score, bundle.blend.thresholds)
        return {
            "transaction_id": tx.transaction_id,
            "risk_score": score,
            "risk_level": level,
            "action": B.action(level),
            "latency_ms": (time.perf_counter() - t0) * 1000,
        }

    return app
