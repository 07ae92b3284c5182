"""MLflow pyfunc over the serving bundle, logged with MLflow's "models from code".

``register`` logs this FILE (``python_model=<path of this file>``) with the bundle folder as
the artifact ``bundle`` and the ``components`` package as code, so nothing is cloudpickled:
``mlflow.pyfunc.load_model`` re-executes this file, which calls ``mlflow.models.set_model``,
and ``load_context`` opens the bundle through ``bundle.load_bundle`` (sha256-verified, no
pickles). ``mlflow models serve -m models:/<name>@champion`` can therefore score with it.

Input: a DataFrame of raw transaction fields, the API's request fields (``transaction_id,
cashier_id, item_count, total_amount, void_count, no_sale_count, weight_variance`` required;
the other ``RAW_TRANSACTION`` fields optional, defaulted like the API; ``timestamp`` as an
ISO-8601 string). Output: one row per input with ``transaction_id, risk_score (0-100),
risk_level, action``. Features come from ``features.compute_features`` with each row's
cashier/store prior from the bundle's profiles, both model outputs from the shared scoring
engine (``engine.score_features``), the score from ``blend.risk_score``: the same code as
serving's batch path, favouring clarity over speed (one ``raw_row`` per input row).
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import numpy as np
import pandas as pd

OUTPUT_COLUMNS = ("transaction_id", "risk_score", "risk_level", "action")


def _clean(value: Any) -> Any:
    """Missing optional values (None / NaN / NaT) -> None, numpy scalars -> Python."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


class CashierRiskModel(mlflow.pyfunc.PythonModel):
    """Scores raw transactions with the bundle's XGBoost + isolation forest + blend."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from components.contracts import features as F
        from components.contracts.bundle import load_bundle
        from components.contracts.engine import IForestTrees, XGBTrees

        self.bundle = load_bundle(context.artifacts["bundle"])
        self.xgb = XGBTrees.from_booster(self.bundle.load_xgb())
        self.forest = IForestTrees.from_forest(self.bundle.load_forest())
        self.profiles = F.ProfileIndex.from_table(self.bundle.load_profiles())

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        from components.contracts import blend
        from components.contracts import features as F
        from components.contracts.engine import score_features
        from components.contracts.schemas import REQUIRED_FIELDS

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in REQUIRED_FIELDS if c not in frame.columns]
        if missing:
            raise ValueError(f"input misses required field(s): {', '.join(missing)}")
        if frame.empty:
            return pd.DataFrame({c: [] for c in OUTPUT_COLUMNS})
        records = [
            {k: _clean(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")
        ]
        raw = np.vstack([F.raw_row(rec) for rec in records])
        prior = np.vstack(
            [self.profiles.prior_for(str(r["cashier_id"]), r.get("store_id")) for r in records]
        )
        X = F.compute_features(raw, prior)
        margin, forest_score = score_features(self.xgb, self.forest, X)
        scores = blend.risk_score(margin, forest_score, self.bundle.blend)
        levels = blend.risk_levels(scores, self.bundle.blend.thresholds)
        return pd.DataFrame(
            {
                "transaction_id": [str(r["transaction_id"]) for r in records],
                "risk_score": scores,
                "risk_level": list(levels),
                "action": [blend.action(lv) for lv in levels],
            }
        )


mlflow.models.set_model(CashierRiskModel())
