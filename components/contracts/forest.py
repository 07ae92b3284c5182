"""The isolation forest as plain arrays: a non-pickle model format that serving can walk fast.

``ForestArrays`` holds every tree of a fitted ``sklearn.ensemble.IsolationForest`` as flat
1-D numpy arrays (int32 / float64), saved as ``forest.npz`` and loaded with
``allow_pickle=False``. It carries everything ``IsolationForest.score_samples`` needs, so
``ForestArrays.score_samples`` reproduces sklearn's scores bit for bit without sklearn,
through the shared scoring engine (``components.contracts.engine``) that serving uses.

Node layout (all trees concatenated; tree ``t`` owns nodes
``tree_offsets[t] : tree_offsets[t + 1]``):

* ``feature[i]``: column index in the GLOBAL feature space (the ``FEATURE_NAMES`` order of
  the matrix passed to ``score_samples``); ``-1`` on leaves.
* ``threshold[i]``: split threshold (float64). Go left when ``float32(x) <= threshold``:
  sklearn casts inputs to float32 before comparing with its float64 thresholds.
* ``left[i]`` / ``right[i]``: GLOBAL node indices of the children (tree offset already
  added); ``-1`` on leaves. A node is a leaf iff ``left[i] == -1``.
* ``missing_left[i]``: 1 when a NaN input goes left at this node, else 0 (sklearn's
  ``missing_go_to_left``).
* ``path_length[i]``: on leaves, ``depth + c(n_node_samples) - 1.0`` computed exactly as
  sklearn adds it per tree (``c`` = average path length of an unsuccessful BST search);
  0.0 on internal nodes.

Scoring one row ``x``: sum ``path_length`` of the leaf reached in each tree, in tree order,
then ``score = -(2 ** (-total / (n_trees * c_max_samples)))`` (``-0.5`` when the
denominator is 0). Higher score = more normal, like sklearn; ``-score`` is the anomaly score.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from components.contracts.schemas import InputError

logger = logging.getLogger(__name__)

FORMAT = "cashier-integrity-forest"
"""Value of the ``format`` entry, so a wrong ``.npz`` is recognised as such."""
FORMAT_VERSION = 1
"""Bumped whenever the array layout changes incompatibly; ``load`` refuses other versions."""

_NODE_INT_ARRAYS = ("feature", "left", "right", "missing_left")
_NODE_FLOAT_ARRAYS = ("threshold", "path_length")


class ForestFormatError(InputError):
    """A ``forest.npz`` is missing, malformed or of an unsupported version; names the file."""


def average_path_length(n: np.ndarray | float) -> np.ndarray:
    """``c(n)``: average path length of an unsuccessful BST search over ``n`` samples.

    Same formula and operation order as ``sklearn.ensemble._iforest._average_path_length``:
    0 for ``n <= 1``, 1 for ``n == 2``, else ``2 (ln(n - 1) + gamma) - 2 (n - 1) / n``.
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape, dtype=np.float64)
    out[n == 2] = 1.0
    big = n > 2
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + np.euler_gamma) - 2.0 * (nb - 1.0) / nb
    return out


@dataclass(frozen=True, eq=False)
class ForestArrays:
    """An isolation forest as flat arrays (see the module docstring for the layout)."""

    feature: np.ndarray
    """int32 (n_nodes,): global feature index of the split, -1 on leaves."""
    threshold: np.ndarray
    """float64 (n_nodes,): split threshold; go left when float32(x) <= threshold."""
    left: np.ndarray
    """int32 (n_nodes,): global index of the left child, -1 on leaves."""
    right: np.ndarray
    """int32 (n_nodes,): global index of the right child, -1 on leaves."""
    missing_left: np.ndarray
    """int32 (n_nodes,): 1 when a NaN input goes to the left child."""
    path_length: np.ndarray
    """float64 (n_nodes,): leaf value depth + c(n_node_samples) - 1.0; 0.0 on internal nodes."""
    tree_offsets: np.ndarray
    """int32 (n_trees + 1,): node range of each tree; tree_offsets[-1] == n_nodes."""
    n_features: int
    """Width of the global feature matrix the forest scores."""
    max_samples: int
    """``max_samples_`` of the fitted model (sub-sample size per tree)."""
    c_max_samples: float
    """c(max_samples): the path length normaliser."""
    offset: float
    """sklearn's ``offset_`` (``decision_function = score_samples - offset``)."""
    max_depth: int
    """Most edges from a root to a leaf over all trees (bounds the walk of a kernel)."""

    # ------------------------------------------------------------------ construction

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_trees(self) -> int:
        return int(self.tree_offsets.shape[0] - 1)

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    def validate(self, source: str = "forest") -> None:
        """Check dtypes, shapes and index ranges; raise ``ForestFormatError`` naming ``source``."""

        def bad(msg: str) -> ForestFormatError:
            return ForestFormatError(f"{source}: {msg}")

        n = self.feature.shape[0] if self.feature.ndim == 1 else -1
        for name in (*_NODE_INT_ARRAYS, *_NODE_FLOAT_ARRAYS):
            arr = getattr(self, name)
            want = np.int32 if name in _NODE_INT_ARRAYS else np.float64
            if not isinstance(arr, np.ndarray) or arr.dtype != want or arr.ndim != 1:
                raise bad(f"array '{name}' must be 1-D {np.dtype(want).name}")
            if arr.shape[0] != n:
                raise bad(f"array '{name}' has {arr.shape[0]} nodes, 'feature' has {n}")
        offsets = self.tree_offsets
        if offsets.dtype != np.int32 or offsets.ndim != 1 or offsets.shape[0] < 2:
            raise bad("array 'tree_offsets' must be 1-D int32 with at least 2 entries")
        if offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) <= 0):
            raise bad("array 'tree_offsets' must rise strictly from 0 to the node count")
        leaf = self.left == -1
        if np.any(leaf != (self.right == -1)) or np.any(leaf != (self.feature == -1)):
            raise bad("leaves must have left == right == feature == -1")
        inner = ~leaf
        if np.any(self.feature[inner] >= self.n_features) or np.any(self.feature[inner] < 0):
            raise bad(f"feature index out of range for n_features={self.n_features}")
        # Children must stay inside their own tree and point forward (no cycles).
        tree_of = np.repeat(np.arange(self.n_trees), np.diff(offsets))
        idx = np.arange(n)
        for child in (self.left, self.right):
            c = child[inner]
            if np.any(c <= idx[inner]) or np.any(c >= offsets[tree_of[inner] + 1]):
                raise bad("child indices must point forward within their own tree")
        if not np.all(np.isfinite(self.path_length)):
            raise bad("path_length must be finite")
        if self.max_samples < 1 or not np.isfinite(self.c_max_samples):
            raise bad("max_samples / c_max_samples out of range")

    @classmethod
    def from_sklearn(
        cls, model: Any, *, feature_index: Any = None, n_features: int | None = None
    ) -> ForestArrays:
        """Flatten a fitted ``sklearn.ensemble.IsolationForest``.

        Args:
            model: The fitted forest.
            feature_index: When the model was fitted on a column subset of a wider matrix,
                ``feature_index[j]`` is the wide-matrix column of the model's column j; the
                arrays then score the wide matrix directly.
            n_features: Width of that wide matrix (required with ``feature_index``).

        Node features are mapped to the global feature space through
        ``estimators_features_`` exactly when sklearn itself sub-selects columns at scoring
        time (``_max_features != n_features_in_``); otherwise sklearn applies each tree to
        the full matrix, and so do we.
        """
        if not hasattr(model, "estimators_"):
            raise ValueError("IsolationForest is not fitted")
        model_width = int(model.n_features_in_)
        subsample = int(model._max_features) != model_width
        if feature_index is None:
            to_wide = np.arange(model_width, dtype=np.int64)
            n_features = model_width
        else:
            to_wide = np.asarray(feature_index, dtype=np.int64)
            if to_wide.shape != (model_width,) or n_features is None:
                raise ValueError("feature_index needs one entry per model column and n_features")
            if to_wide.min() < 0 or to_wide.max() >= n_features:
                raise ValueError(f"feature_index out of range for n_features={n_features}")
        max_samples = int(getattr(model, "_max_samples", model.max_samples_))
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in (*_NODE_INT_ARRAYS, *_NODE_FLOAT_ARRAYS)
        }
        offsets = [0]
        max_depth = 0
        for est, cols, depths, avg in zip(
            model.estimators_,
            model.estimators_features_,
            model._decision_path_lengths,
            model._average_path_length_per_tree,
            strict=True,
        ):
            tree = est.tree_
            base = offsets[-1]
            leaf = tree.children_left == -1
            local_feature = np.asarray(tree.feature, dtype=np.int64)
            cols = np.asarray(cols, dtype=np.int64)
            local = cols[np.where(leaf, 0, local_feature)] if subsample else local_feature
            glob = to_wide[np.where(leaf, 0, local)]
            parts["feature"].append(np.where(leaf, -1, glob).astype(np.int32))
            parts["threshold"].append(np.where(leaf, 0.0, tree.threshold).astype(np.float64))
            parts["left"].append(np.where(leaf, -1, tree.children_left + base).astype(np.int32))
            parts["right"].append(np.where(leaf, -1, tree.children_right + base).astype(np.int32))
            parts["missing_left"].append(
                np.where(leaf, 0, tree.missing_go_to_left).astype(np.int32)
            )
            # Same expression and order as sklearn's per-tree accumulation term.
            value = np.asarray(depths, dtype=np.float64) + np.asarray(avg, dtype=np.float64) - 1.0
            parts["path_length"].append(np.where(leaf, value, 0.0))
            max_depth = max(max_depth, int(tree.max_depth))
            offsets.append(base + int(tree.node_count))
        if offsets[-1] > np.iinfo(np.int32).max:
            raise ValueError("forest too large for int32 node indices")
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(
            **arrays,
            tree_offsets=np.asarray(offsets, dtype=np.int32),
            n_features=n_features,
            max_samples=max_samples,
            c_max_samples=float(average_path_length(np.array([max_samples]))[0]),
            offset=float(model.offset_),
            max_depth=max_depth,
        )

    # ------------------------------------------------------------------ (de)serialisation

    def to_npz_bytes(self) -> bytes:
        """The ``forest.npz`` content (compressed, pickle-free)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            format=np.array(FORMAT),
            format_version=np.array(FORMAT_VERSION, dtype=np.int64),
            n_features=np.array(self.n_features, dtype=np.int64),
            max_samples=np.array(self.max_samples, dtype=np.int64),
            max_depth=np.array(self.max_depth, dtype=np.int64),
            c_max_samples=np.array(self.c_max_samples, dtype=np.float64),
            offset=np.array(self.offset, dtype=np.float64),
            tree_offsets=self.tree_offsets,
            **{name: getattr(self, name) for name in (*_NODE_INT_ARRAYS, *_NODE_FLOAT_ARRAYS)},
        )
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        """Write ``forest.npz`` atomically (local path or ``s3://`` URI)."""
        from components.contracts import storage

        storage.write_bytes(self.to_npz_bytes(), str(path))

    @classmethod
    def from_npz_bytes(cls, data: bytes, source: str = "forest.npz") -> ForestArrays:
        """Parse ``forest.npz`` content; raise ``ForestFormatError`` naming ``source``."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                content = {key: npz[key] for key in npz.files}
        except (ValueError, OSError, EOFError) as exc:
            raise ForestFormatError(f"{source}: not a readable .npz file ({exc})") from exc
        fmt = content.get("format")
        if fmt is None or str(fmt) != FORMAT:
            raise ForestFormatError(f"{source}: not a {FORMAT} file (format={fmt!s})")
        version = content.get("format_version")
        if version is None or int(version) != FORMAT_VERSION:
            raise ForestFormatError(
                f"{source}: unsupported format_version {version!s} (expected {FORMAT_VERSION})"
            )
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in content]
        if missing:
            raise ForestFormatError(f"{source}: missing array(s) {', '.join(missing)}")
        scalars = {
            "n_features": int,
            "max_samples": int,
            "max_depth": int,
            "c_max_samples": float,
            "offset": float,
        }
        kwargs = {n: scalars[n](content[n]) if n in scalars else content[n] for n in names}
        try:
            return cls(**kwargs)
        except ForestFormatError as exc:
            raise ForestFormatError(f"{source}: {exc}".replace("forest: ", "")) from exc

    @classmethod
    def load(cls, path: str | Path) -> ForestArrays:
        """Read and verify ``forest.npz`` (local path or ``s3://`` URI), pickle-free."""
        from components.contracts import storage

        return cls.from_npz_bytes(storage.read_bytes(str(path)), source=str(path))

    # ------------------------------------------------------------------ scoring

    @functools.cached_property
    def _trees(self):
        # Laid out for the engine once per forest (the arrays are never mutated).
        from components.contracts.engine import IForestTrees

        return IForestTrees.from_forest(self)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Equals ``IsolationForest.score_samples(X)``; scored by the shared engine.

        Args:
            X: (n, n_features) matrix in the global feature order (compared in float32,
                as sklearn does).

        Returns:
            (n,) float64 scores; lower = more anomalous (use ``-score`` as anomaly score).
        """
        return self._trees.scores(X)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``score_samples(X) - offset`` (negative = outlier), like sklearn."""
        return self.score_samples(X) - self.offset
