"""The two models as the engine scores them: ``XGBTrees`` and ``IForestTrees``.

Both are built once at load time from the formats the training stages write (XGBoost's JSON
model, ``forest.npz``'s ``ForestArrays``) into ``layout``'s arrays, and scored by the
``kernels`` (one row, or blocks of rows in parallel) with the same numbers as the libraries
that trained them: ``Booster.predict(output_margin=True)`` and
``IsolationForest.score_samples``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from components.contracts.engine import kernels
from components.contracts.engine.layout import (
    LEAF,
    Bitvectors,
    LeafPaths,
    Packed,
    TreeModelError,
    bitvectors,
    leaf_paths,
    left_below,
    node_means,
    pack,
)

if TYPE_CHECKING:
    from components.contracts.forest import ForestArrays

_UNUSED_PATHS = (np.zeros((1, 1), dtype=np.int32), np.zeros((1, 1), dtype=np.float32))
_UNUSED_CONTRIBS = np.zeros((1, 1), dtype=np.float32)
_NO_BIAS = np.float32(0.0)


def _as_rows(X: np.ndarray, num_features: int) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != num_features:
        raise ValueError(f"expected a (n, {num_features}) matrix, got shape {tuple(X.shape)}")
    return X


def _sums(packed: Packed, bits: Bitvectors, X: np.ndarray, init) -> np.ndarray:
    """Per row, ``init`` plus the leaf values reached in every tree (no attributions)."""
    out = np.empty(X.shape[0], dtype=packed.value.dtype)
    kernels.tree_batch(
        X,
        *bits.arrays(),
        *_UNUSED_PATHS,
        packed.depth,
        init,
        False,
        _NO_BIAS,
        out,
        _UNUSED_CONTRIBS,
    )
    return out


@dataclass(frozen=True)
class XGBTrees:
    """A binary:logistic XGBoost booster as packed node records (``layout``)."""

    packed: Packed
    bits: Bitvectors
    paths: LeafPaths
    base_margin: np.float32
    bias: np.float32
    """Expected margin: base margin plus every tree's root mean (Saabas bias term)."""
    num_features: int
    feature_names: tuple[str, ...] | None = None

    @property
    def num_trees(self) -> int:
        return int(self.packed.roots.size)

    @classmethod
    def from_booster(cls, booster) -> XGBTrees:
        """Convert an ``xgboost.Booster`` (reads its JSON dump; no prediction involved)."""
        return cls.from_json(booster.save_raw(raw_format="json"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> XGBTrees:
        """Convert XGBoost's JSON model format (``Booster.save_raw("json")``).

        Raises:
            TreeModelError: For anything but a single-target ``binary:logistic`` /
                ``reg:logistic`` / ``binary:logitraw`` gbtree without categorical splits.
        """
        model = json.loads(raw)
        learner = model["learner"]
        objective = learner["objective"]["name"]
        if objective not in ("binary:logistic", "reg:logistic", "binary:logitraw"):
            raise TreeModelError(f"unsupported XGBoost objective {objective!r}")
        params = learner["learner_model_param"]
        if int(params.get("num_target", "1")) != 1 or int(params.get("num_class", "0")) > 1:
            raise TreeModelError("only single-target XGBoost models are supported")
        booster = learner["gradient_booster"]
        if booster.get("name") not in ("gbtree", None):
            raise TreeModelError(f"unsupported XGBoost booster {booster.get('name')!r}")
        base_score = float(str(params["base_score"]).strip("[]").split(",")[0])
        if objective == "binary:logitraw":
            base_margin = np.float32(base_score)
        else:
            # XGBoost stores base_score as a float32 probability; ProbToMargin computes
            # 1/p - 1 in float32, then a correctly rounded log. This matches
            # Booster.predict bit for bit (a float64 1/p - 1 is 1 ulp off for most p).
            p32 = np.float32(base_score)
            odds = np.float32(np.float32(1.0) / p32 - np.float32(1.0))
            base_margin = np.float32(-math.log(float(odds)))
        num_features = int(params["num_feature"])
        names = learner.get("feature_names") or None

        trees = []
        bias = base_margin
        for tree in booster["model"]["trees"]:
            if any(int(s) != 0 for s in tree.get("split_type", [])):
                raise TreeModelError("categorical splits are not supported")
            left = np.asarray(tree["left_children"], dtype=np.int64)
            right = np.asarray(tree["right_children"], dtype=np.int64)
            cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32)
            hess = np.asarray(tree["sum_hessian"], dtype=np.float64).astype(np.float32)
            mean = node_means(left, right, cond, hess)
            inner = np.flatnonzero(left != LEAF)
            delta = np.zeros(left.size, dtype=np.float32)
            delta[left[inner]] = mean[left[inner]] - mean[inner]
            delta[right[inner]] = mean[right[inner]] - mean[inner]
            bias = np.float32(bias + mean[0])
            trees.append(
                {
                    "left": left,
                    "right": right,
                    "feature": np.asarray(tree["split_indices"], dtype=np.int64),
                    "threshold": cond,
                    "nan_left": np.asarray(tree["default_left"], dtype=np.int64),
                    "value": cond,
                    "delta": delta,
                }
            )
        if not trees:
            raise TreeModelError("the XGBoost model has no trees")
        packed = pack(trees, np.float32)
        return cls(
            packed=packed,
            bits=bitvectors(packed),
            paths=leaf_paths(packed, num_features),
            base_margin=np.float32(base_margin),
            bias=np.float32(bias),
            num_features=num_features,
            feature_names=tuple(names) if names else None,
        )

    def margin_row(self, x: np.ndarray) -> float:
        """Margin (log-odds) of one row ``x`` of shape (F,)."""
        p = self.packed
        margin = kernels.walk_row(
            x, p.nodes, p.fview, p.value, p.roots, p.depth, self.base_margin, None
        )
        return float(margin)

    def margin_contribs_row(self, x: np.ndarray, out: np.ndarray) -> float:
        """Margin of one row and its Saabas attributions written into ``out`` (F + 1,).

        ``out[:F]`` are per-feature contributions, ``out[F]`` the bias; they sum to the margin.
        """
        p = self.packed
        kernels.reset_contribs(out, self.bias)
        return float(
            kernels.walk_row(x, p.nodes, p.fview, p.value, p.roots, p.depth, self.base_margin, out)
        )

    def margins(self, X: np.ndarray) -> np.ndarray:
        """Margins of every row of ``X`` (n, F) as float32 (blocks of rows in parallel)."""
        return _sums(self.packed, self.bits, _as_rows(X, self.num_features), self.base_margin)

    def margins_contribs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Margins (n,) and Saabas attributions (n, F + 1) of every row of ``X``.

        Bit-identical to ``margin_contribs_row`` on each row.
        """
        X = _as_rows(X, self.num_features)
        n = X.shape[0]
        margins = np.empty(n, dtype=np.float32)
        contribs = np.empty((n, self.num_features + 1), dtype=np.float32)
        kernels.tree_batch(
            X, *self.bits.arrays(), self.paths.feature, self.paths.delta, self.packed.depth,
            self.base_margin, True, self.bias, margins, contribs,
        )  # fmt: skip
        return margins, contribs


@dataclass(frozen=True)
class IForestTrees:
    """An isolation forest as packed node records (``layout``)."""

    packed: Packed
    bits: Bitvectors
    denominator: float
    """``n_trees * c(max_samples)``; 0 means sklearn's constant score -0.5."""
    num_features: int

    @property
    def num_trees(self) -> int:
        return int(self.packed.roots.size)

    @classmethod
    def from_forest(cls, forest: ForestArrays) -> IForestTrees:
        """Re-lay a ``components.contracts.forest.ForestArrays`` (``forest.npz``).

        Each leaf carries ``depth + c(n_samples) - 1`` (float64); the per-row sum over trees
        in tree order gives ``score_samples = -2 ** (-sum / (T * c(max_samples)))``.
        """
        offsets = forest.tree_offsets.astype(np.int64)
        if offsets.size < 2:
            raise TreeModelError("the isolation forest has no trees")
        trees = []
        for t in range(offsets.size - 1):
            lo, hi = int(offsets[t]), int(offsets[t + 1])
            left = forest.left[lo:hi].astype(np.int64)
            right = forest.right[lo:hi].astype(np.int64)
            leaf = left == LEAF
            trees.append(
                {
                    "left": np.where(leaf, LEAF, left - lo),
                    "right": np.where(leaf, LEAF, right - lo),
                    "feature": np.maximum(forest.feature[lo:hi], 0).astype(np.int64),
                    "threshold": left_below(forest.threshold[lo:hi]),
                    "nan_left": forest.missing_left[lo:hi].astype(np.int64),
                    "value": forest.path_length[lo:hi],
                }
            )
        packed = pack(trees, np.float64)
        return cls(
            packed=packed,
            bits=bitvectors(packed),
            denominator=float(forest.n_trees * forest.c_max_samples),
            num_features=int(forest.n_features),
        )

    @classmethod
    def from_sklearn(cls, model) -> IForestTrees:
        """Convert a fitted ``sklearn.ensemble.IsolationForest`` (tests and tools only)."""
        from components.contracts.forest import ForestArrays

        return cls.from_forest(ForestArrays.from_sklearn(model))

    def finish(self, total: float) -> float:
        """``score_samples`` of one row from its path-length sum."""
        if self.denominator == 0:
            return -0.5
        # numpy's power (not math.pow, which can differ in the last bit) so one row scores
        # exactly like the same row in a batch, and like sklearn.
        buf = np.array([-(total / self.denominator)])
        np.power(2.0, buf, out=buf)
        return -float(buf[0])

    def score_row(self, x: np.ndarray) -> float:
        """sklearn ``score_samples`` of one row (higher = more normal, range [-1, 0])."""
        p = self.packed
        total = kernels.walk_row(x, p.nodes, p.fview, p.value, p.roots, p.depth, 0.0, None)
        return self.finish(total)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """sklearn ``score_samples`` of every row of ``X`` (blocks of rows in parallel)."""
        out = _sums(self.packed, self.bits, _as_rows(X, self.num_features), 0.0)
        if self.denominator == 0:
            return np.full_like(out, -0.5)
        return -(2.0 ** (-(out / self.denominator)))


def score_pair_row(
    x: np.ndarray, xgb: XGBTrees, forest: IForestTrees, contribs: np.ndarray, top: np.ndarray
) -> tuple[float, float, int]:
    """Score one row with both models in one compiled call.

    Args:
        x: (F,) float64 features.
        xgb: The XGBoost trees.
        forest: The isolation-forest trees.
        contribs: (F + 1,) float32 buffer receiving the Saabas attributions.
        top: (k,) int64 buffer receiving the top positive attributions' feature indices.

    Returns:
        ``(xgb_margin, iforest_score, n_top)``; ``iforest_score`` is sklearn's
        ``score_samples`` value.
    """
    xp, fp = xgb.packed, forest.packed
    margin, path, n_top = kernels.pair_row(
        x, xp.nodes, xp.fview, xp.value, xp.roots, xp.depth, xgb.base_margin, xgb.bias,
        fp.nodes, fp.fview, fp.value, fp.roots, fp.depth, contribs, top,
    )  # fmt: skip
    return float(margin), forest.finish(path), int(n_top)


def score_features(xgb: XGBTrees, forest: IForestTrees, X: np.ndarray) -> tuple[np.ndarray, ...]:
    """The batch API for evaluation and the pyfunc: both model outputs of a feature matrix.

    Args:
        xgb: The XGBoost trees (``XGBTrees.from_booster`` / ``from_json``).
        forest: The isolation-forest trees (``IForestTrees.from_forest``).
        X: (n, F) features in ``features.FEATURE_NAMES`` order.

    Returns:
        ``(xgb_margin, iforest_score)``, both float64 (n,): the inputs of
        ``blend.risk_score`` (``iforest_score`` in sklearn's ``score_samples`` convention).
    """
    X = _as_rows(X, xgb.num_features)
    return xgb.margins(X).astype(np.float64), forest.scores(X)
