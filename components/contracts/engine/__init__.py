"""The one scoring engine: tree kernels for XGBoost and the isolation forest.

Serving (one request, or a batch), the MLflow pyfunc and evaluation all score through it,
so the numbers the quality gate checks come from the code that serves. ``layout`` turns the
models into flat arrays, ``kernels`` walks them (written once, variants as parameters),
``models`` wraps both; the blend on top is ``components.contracts.blend``.
"""

from components.contracts.engine.layout import TreeModelError
from components.contracts.engine.models import (
    IForestTrees,
    XGBTrees,
    score_features,
    score_pair_row,
)

__all__ = ["IForestTrees", "TreeModelError", "XGBTrees", "score_features", "score_pair_row"]
