"""The gate's same-period comparison: the champion's bundle scored on the challenger's test rows.

A champion's own metrics were measured on an older test period (and perhaps another world);
comparing numbers from two periods mixes the models' difference with the periods'. So the
champion's bundle is fetched from the registry and both bundles score the challenger's test
rows through the serving engine; each flags rows at its OWN valid-fixed 1%-FPR threshold
(``blend.json`` ``extra.threshold_at_1pct_fpr``), and the paired cashier-block bootstrap gives
the difference of their recalls with its 95% interval (``logic.gate`` decides on it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from components.contracts import bundle as B
from components.contracts import storage
from components.contracts.blend import risk_score
from components.contracts.bootstrap import Blocks
from components.contracts.engine import IForestTrees, XGBTrees, score_features
from components.contracts.features import FEATURE_NAMES
from components.contracts.layout import SUBSET_COLUMN
from components.contracts.schemas import InputError

log = logging.getLogger(__name__)

THRESHOLD_KEY = "threshold_at_1pct_fpr"
"""Key of ``BlendParams.extra`` holding the valid-fixed 1%-FPR threshold (set by evaluate)."""


class NotComparable(Exception):
    """The champion cannot be scored on these rows; the message says why."""


def read_test_rows(uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, is_fraud, cashier_id) of the feature table's test rows."""
    import pyarrow.compute as pc

    columns = [SUBSET_COLUMN, "is_fraud", "cashier_id", *FEATURE_NAMES]
    table = storage.read_table(uri, columns=columns)
    table = table.filter(pc.equal(table.column(SUBSET_COLUMN), "test"))
    if table.num_rows == 0:
        raise InputError(f"{uri}: column '{SUBSET_COLUMN}' has no 'test' rows")
    X = np.column_stack([table.column(n).to_numpy() for n in FEATURE_NAMES]).astype(np.float64)
    labels = table.column("is_fraud").to_numpy(zero_copy_only=False).astype(bool)
    cashier = table.column("cashier_id").to_numpy(zero_copy_only=False)
    return X, labels, cashier


def flags(bundle: B.Bundle, X: np.ndarray) -> np.ndarray:
    """Rows the bundle flags at its valid-fixed 1%-FPR threshold.

    Raises:
        NotComparable: The bundle predates valid-fixed thresholds.
    """
    threshold = bundle.blend.extra.get(THRESHOLD_KEY)
    if threshold is None:
        raise NotComparable("its blend.json has no valid-fixed threshold_at_1pct_fpr")
    margin, forest = score_features(
        XGBTrees.from_booster(bundle.load_xgb()),
        IForestTrees.from_forest(bundle.load_forest()),
        X,
    )
    return risk_score(margin, forest, bundle.blend) >= float(threshold)


def champion_bundle(model_uri: str, work: Path) -> B.Bundle:
    """Download a registered pyfunc model and open its bundle (verified, same feature version).

    Raises:
        NotComparable: Not downloadable, or its bundle does not load with this code.
    """
    import mlflow

    dest = work / "champion"
    dest.mkdir(exist_ok=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(dest)))
        return B.load_bundle(local / "artifacts" / "bundle")
    except B.BundleError as exc:
        raise NotComparable(f"its bundle does not load with this code: {exc}") from exc
    except Exception as exc:  # the registry, the store or the download failed
        raise NotComparable(f"{model_uri} not downloadable: {type(exc).__name__}: {exc}") from exc


def compare(
    challenger: B.Bundle, champion: B.Bundle, X: np.ndarray, labels: np.ndarray, cashier
) -> dict[str, Any]:
    """Both bundles' recall on the same test rows, each at its own valid-fixed 1%-FPR
    threshold, and their paired difference (challenger - champion), all with 95% intervals."""
    blocks = Blocks(cashier)
    hit_new, hit_old = flags(challenger, X), flags(champion, X)
    return {
        "rows": int(labels.size),
        "frauds": int(labels.sum()),
        "metric": "blend recall at the valid-fixed 1% FPR threshold, same test rows",
        "challenger": blocks.rate(hit_new, labels),
        "champion": blocks.rate(hit_old, labels),
        "difference": blocks.paired_difference(hit_new, hit_old, labels),
        "challenger_false_alarm_rate": blocks.rate(hit_new, ~labels),
        "champion_false_alarm_rate": blocks.rate(hit_old, ~labels),
    }


def same_period(
    challenger: B.Bundle, model_uri: str, features_uri: str, work: Path
) -> tuple[dict[str, Any] | None, str]:
    """``(compare(...), "")``, or ``(None, why)`` when the champion cannot be scored."""
    try:
        champion = champion_bundle(model_uri, work)
        X, labels, cashier = read_test_rows(features_uri)
        flags(challenger, X[:1])  # the challenger must be comparable, or it is our bug
        return compare(challenger, champion, X, labels, cashier), ""
    except NotComparable as exc:
        log.warning("champion %s not scored on the same period: %s", model_uri, exc)
        return None, str(exc)


def decision_tags(comparison: dict[str, Any] | None) -> dict[str, str]:
    """Model-version tags recording both intervals of the same-period comparison."""
    if comparison is None:
        return {}
    return {
        f"gate.{key}_recall_at_1pct_fpr": (
            f"{r['value']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        )
        for key, r in (
            ("challenger", comparison["challenger"]),
            ("champion", comparison["champion"]),
            ("difference", comparison["difference"]),
        )
    }
