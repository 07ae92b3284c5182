"""Compiled tree walks: XGBoost and isolation-forest models as flat arrays, scored with numba.

Why not ``Booster.inplace_predict`` / ``IsolationForest.score_samples`` per request: on this
machine one single-row ``inplace_predict`` costs ~200 us and sklearn ~4.7 ms, mostly call
overhead. A numba walk over plain arrays costs a few microseconds per row for the same trees
and gives exactly the same numbers:

* XGBoost: features are cast to float32, a node goes left when ``x < split_condition``,
  a missing value (NaN) follows ``default_left``; the margin is ``base_margin`` plus the leaf
  values, accumulated in float32 in tree order (what XGBoost's CPU predictor does).
  Path attributions (Saabas, what ``pred_contribs=True, approx_contribs=True`` returns) come
  from the same walk: each step credits ``mean(child) - mean(parent)`` to the split feature,
  where a node's mean is its cover-weighted (``sum_hessian``) average leaf value.
* Isolation forest: sklearn compares ``float64(float32(x)) <= threshold64``. For a float32
  ``x`` that equals ``x <= t32`` with ``t32`` the largest float32 not above the threshold,
  so the walk compares in float32 and stays exact. Each leaf carries
  ``depth + c(n_samples) - 1`` (float64); the per-row sum over trees in tree order gives
  ``score_samples = -2 ** (-sum / (T * c(max_samples)))``.

Layout (both models): nodes are renumbered breadth-first per tree so siblings are adjacent
(right child = left child + 1) and packed into one 16-byte record per node, an ``(n, 4)``
int32 array with a float32 view of the same memory:

* ``[0]`` left child (global index); a leaf points to itself;
* ``[1]`` ``feature << 1 | nan_goes_left``; ``-1`` at leaves;
* ``[2]`` float32 threshold; ``+inf`` at leaves;
* ``[3]`` float32 Saabas delta (XGBoost; ``mean(node) - mean(parent)``), unused otherwise.

One step reads one record (one cache line) and picks the child without a branch:
``child + 1 - go_left``. At a leaf ``go_left`` is always 1 (``x < inf``, or NaN going left),
so a leaf is a fixed point: single-row walks advance four trees at once for the deepest one's
depth without leaf checks. Leaf values live in a separate array. These walks serve single
requests.

Batches use a second form of the same trees, QuickScorer's bitvectors (Lucchese et al.,
SIGIR 2015), which trades the data-dependent walk for straight-line, SIMD-friendly work over
a block of rows:

* the leaves of a tree are numbered left to right, one bit each in a bitvector (64-bit words,
  as many as the tree needs), all bits set at the start;
* every split node is an entry ``(feature, threshold, nan_right, word, mask)``; for each row
  where the node sends the row right (a "false" node), the mask clears the bits of the node's
  left subtree;
* the leaf a row reaches is the lowest set bit: every leaf left of it lies in the left subtree
  of a node on its path that went right, and no node clears it (that node would be an
  ancestor whose test sent the row left). Exact, not approximate: the same comparisons pick
  the same leaf, and leaf values are summed per row in tree order as in the walks.

"Goes right" is one comparison per model: sklearn's ``x <= t`` goes left, so right is
``x > t``; XGBoost's ``x < t`` goes left, and for float32 ``x`` that is ``x >= t`` exactly when
``x > t'`` with ``t'`` the next float32 below ``t``. NaN goes right when the node says so.
Each node costs a compare and an AND per row, vectorized over a block of rows, instead of a
dependent load chain per level: ~4x the throughput of the level-synchronous walk on this
machine (see ``make bench-serving``). Batch attributions start from the same exit leaves:
each leaf stores its path's credits, replayed in the single-row walk's order (groups of four
trees, level by level) so that batch and single-row attributions are bit-identical.

Every kernel is compiled with ``cache=True``; ``serving`` points NUMBA_CACHE_DIR at a
writable folder (``/tmp`` on Lambda) and the model loader warms the kernels up at load time
so no JIT compilation happens inside a request. The images go further and ship the kernels
precompiled (``serving.warm``, ``NUMBA_CACHE_SEED``), so a cold start compiles nothing.
Batch kernels keep their work in a plain function called from a thin ``prange`` loop: a
parallel kernel's compile time grows with its body.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

if TYPE_CHECKING:
    from components.contracts.forest import ForestArrays

LEAF = -1
BLOCK = 128
"""Rows scored together in batch kernels: every tree's bitvectors for the block stay in L1."""
ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)


class TreeModelError(ValueError):
    """A model cannot be converted to flat arrays (unsupported objective, categorical split...)."""


# --------------------------------------------------------------------------------------
# Layout shared by both model kinds
# --------------------------------------------------------------------------------------


def _bfs_order(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Node ids of one tree in breadth-first order, siblings adjacent (left then right)."""
    order = [0]
    i = 0
    while i < len(order):
        node = order[i]
        if left[node] != LEAF:
            order.append(int(left[node]))
            order.append(int(right[node]))
        i += 1
    return np.asarray(order, dtype=np.int64)


@dataclass(frozen=True)
class _Packed:
    """Concatenated, renumbered trees: packed node records, leaf values, roots, depths."""

    nodes: np.ndarray
    """(n, 4) int32 records (see the module docstring)."""
    value: np.ndarray
    """(n,) leaf values (0 on split nodes)."""
    roots: np.ndarray
    depth: np.ndarray
    """Edges from root to the deepest leaf, per tree."""
    fview: np.ndarray | None = None
    """float32 view of ``nodes`` (same memory), for thresholds and deltas."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fview", self.nodes.view(np.float32))


def _pack(trees: list[dict[str, np.ndarray]], value_dtype) -> _Packed:
    """Renumber and pack per-tree arrays (local ``left``/``right``, ``feature``,
    ``threshold`` (float32), ``nan_left``, ``value``, optional ``delta``)."""
    records, values, roots, depths = [], [], [], []
    offset = 0
    for tree in trees:
        left, right = tree["left"], tree["right"]
        order = _bfs_order(left, right)
        n = order.size
        new_id = np.empty(left.size, dtype=np.int64)
        new_id[order] = np.arange(n)
        leaf = left[order] == LEAF
        child = np.where(leaf, np.arange(n), new_id[np.where(leaf, 0, left[order])]) + offset
        rec = np.zeros((n, 4), dtype=np.int32)
        f32 = rec.view(np.float32)
        rec[:, 0] = child
        code = (tree["feature"][order].astype(np.int64) << 1) | tree["nan_left"][order]
        rec[:, 1] = np.where(leaf, -1, code)
        f32[:, 2] = np.where(leaf, np.float32(np.inf), tree["threshold"][order])
        if "delta" in tree:
            f32[:, 3] = tree["delta"][order]
        depth = np.zeros(n, dtype=np.int64)
        for i in range(n):  # parents precede children in breadth-first order
            if not leaf[i]:
                c = child[i] - offset
                depth[c] = depth[c + 1] = depth[i] + 1
        records.append(rec)
        values.append(np.where(leaf, tree["value"][order], 0).astype(value_dtype))
        roots.append(offset)
        depths.append(int(depth.max()))
        offset += n
    if offset > np.iinfo(np.int32).max // 2:
        raise TreeModelError("model too large for int32 node indices")
    return _Packed(
        nodes=np.ascontiguousarray(np.concatenate(records)),
        value=np.concatenate(values),
        roots=np.asarray(roots, dtype=np.int32),
        depth=np.asarray(depths, dtype=np.int32),
    )


@dataclass(frozen=True)
class _Bitvectors:
    """The same trees as QuickScorer entries, for batch kernels (see the module docstring)."""

    feature: np.ndarray
    """(E,) int32 split feature per entry, entries grouped by tree."""
    threshold: np.ndarray
    """(E,) float32: the row goes right when ``x > threshold``."""
    nan_right: np.ndarray
    """(E,) bool: a NaN goes right."""
    word: np.ndarray
    """(E,) int32 word of the tree's bitvector the mask applies to."""
    mask: np.ndarray
    """(E,) uint64: all bits but the node's left-subtree leaves in that word."""
    tree_entries: np.ndarray
    """(T + 1,) int64 offsets into the entries."""
    tree_words: np.ndarray
    """(T,) int64 64-bit words per tree (ceil(leaves / 64))."""
    leaf_value: np.ndarray
    """Leaf values, each tree's left to right."""
    tree_leaves: np.ndarray
    """(T + 1,) int64 offsets into ``leaf_value``."""

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The fields in the order the batch kernels take them."""
        return (
            self.feature,
            self.threshold,
            self.nan_right,
            self.word,
            self.mask,
            self.tree_entries,
            self.tree_words,
            self.leaf_value,
            self.tree_leaves,
        )


def _bitvectors(p: _Packed, *, right_when_ge: bool) -> _Bitvectors:
    """Build the entries of packed trees.

    ``right_when_ge``: the node sends ``x >= t`` right (XGBoost) rather than ``x > t``
    (sklearn); stored as ``x > nextafter(t, -inf)``, the same test for every float32 ``x``.
    """
    # Plain lists: this loop runs at model load, and numpy scalar indexing is slow.
    child, code_of = p.nodes[:, 0].tolist(), p.nodes[:, 1].tolist()
    thr, value = p.fview[:, 2], p.value.tolist()
    first = [0] * len(child)  # first leaf (left to right) under a node
    feature, node_of, nan_right, word, mask = [], [], [], [], []  # one item per entry
    tree_entries, tree_words, leaf_value, tree_leaves = [0], [], [], [0]
    for root in p.roots:
        n_leaves = 0
        splits = []
        stack = [int(root)]
        while stack:  # pre-order, left child first: leaves come out left to right
            node = stack.pop()
            first[node] = n_leaves
            if code_of[node] < 0:
                leaf_value.append(value[node])
                n_leaves += 1
            else:
                splits.append(node)
                stack += [child[node] + 1, child[node]]
        for node in splits:
            left = child[node]
            a, b = first[left], first[left + 1]  # the left subtree's leaves: [a, b)
            code = code_of[node]
            for w in range(a // 64, (b - 1) // 64 + 1):
                lo, hi = max(a - 64 * w, 0), min(b - 64 * w, 64)
                cleared = ((1 << hi) - 1) ^ ((1 << lo) - 1)
                feature.append(code >> 1)
                node_of.append(node)
                nan_right.append(1 - (code & 1))
                word.append(w)
                mask.append(~cleared & 0xFFFFFFFFFFFFFFFF)
        tree_entries.append(len(feature))
        tree_words.append((n_leaves + 63) // 64)
        tree_leaves.append(len(leaf_value))
    threshold = thr[np.asarray(node_of, dtype=np.int64)]
    if right_when_ge:
        if np.any(threshold == -np.inf):
            raise TreeModelError("a split condition of -inf is not supported")
        threshold = np.nextafter(threshold, np.float32(-np.inf))
    return _Bitvectors(
        feature=np.asarray(feature, dtype=np.int32),
        threshold=np.ascontiguousarray(threshold, dtype=np.float32),
        nan_right=np.asarray(nan_right, dtype=np.bool_),
        word=np.asarray(word, dtype=np.int32),
        mask=np.asarray(mask, dtype=np.uint64),
        tree_entries=np.asarray(tree_entries, dtype=np.int64),
        tree_words=np.asarray(tree_words, dtype=np.int64),
        leaf_value=np.asarray(leaf_value, dtype=p.value.dtype),
        tree_leaves=np.asarray(tree_leaves, dtype=np.int64),
    )


@dataclass(frozen=True)
class _LeafPaths:
    """Per leaf (in ``_Bitvectors`` order), the Saabas credits of its path, root first.

    Paths shorter than the deepest tree are padded with a credit of 0 to the bias slot
    (what the walk adds at a leaf), so the kernel needs no length check.
    """

    feature: np.ndarray
    """(L, D) int32 split feature at each level of the path (F, the bias slot, past its end)."""
    delta: np.ndarray
    """(L, D) float32 ``mean(child) - mean(node)`` credited to that feature."""


def _leaf_paths(p: _Packed, num_features: int) -> _LeafPaths:
    """The credits the attribution walk makes on the way to each leaf, in walk order."""
    child, code_of = p.nodes[:, 0].tolist(), p.nodes[:, 1].tolist()
    delta = p.fview[:, 3].tolist()
    width = max(1, int(p.depth.max()))
    feats: list[list[int]] = []
    deltas: list[list[float]] = []
    for root in p.roots:
        stack: list[tuple[int, list[int], list[float]]] = [(int(root), [], [])]
        while stack:  # the same pre-order as _bitvectors: leaves come out left to right
            node, fs, ds = stack.pop()
            if code_of[node] < 0:
                feats.append(fs)
                deltas.append(ds)
                continue
            left = child[node]
            f = code_of[node] >> 1
            stack.append((left + 1, [*fs, f], [*ds, delta[left + 1]]))
            stack.append((left, [*fs, f], [*ds, delta[left]]))
    n = len(feats)
    feature = np.full((n, width), num_features, dtype=np.int32)
    out = np.zeros((n, width), dtype=np.float32)
    for i, (fs, ds) in enumerate(zip(feats, deltas, strict=True)):
        feature[i, : len(fs)] = fs
        out[i, : len(ds)] = ds
    return _LeafPaths(feature=feature, delta=out)


@numba.njit(cache=True, nogil=True, inline="always")
def _clear(x, bits, threshold, nan_right, mask):
    # One entry over a block of rows: where the node sends the row right, AND in the mask.
    # Written without branches so it compiles to vector compares and ANDs.
    for r in range(x.size):
        v = x[r]
        right = np.uint64((v > threshold) | ((v != v) & nan_right))
        bits[r] &= mask | (right - np.uint64(1))


@numba.njit(cache=True, nogil=True, inline="always")
def _exit_leaves(
    xb, t, feature, threshold, nan_right, word, mask, tree_entries, tree_words, bits, leaf,
):  # fmt: skip
    # Tree t's exit leaf (left-to-right index within the tree) for every row of the block.
    nw = tree_words[t]
    bits[:nw] = ALL_BITS
    for e in range(tree_entries[t], tree_entries[t + 1]):
        _clear(xb[feature[e]], bits[word[e]], threshold[e], nan_right[e], mask[e])
    if nw == 1:  # the common case, kept branch-free for the vectorizer
        for r in range(leaf.size):
            leaf[r] = trailing_zeros(bits[0, r])
    else:
        for r in range(leaf.size):
            w = 0
            while bits[w, r] == 0:  # the exit leaf always keeps its bit
                w += 1
            leaf[r] = 64 * w + trailing_zeros(bits[w, r])


@numba.njit(cache=True, nogil=True, inline="always")
def _feature_block(X, lo, m, xb):
    # Rows lo..lo+m of X as float32, feature-major (one entry reads one contiguous row).
    for i in range(m):
        for j in range(X.shape[1]):
            xb[j, i] = np.float32(X[lo + i, j])


@numba.njit(cache=True, nogil=True)
def _bitvector_block(
    X, lo, feature, threshold, nan_right, word, mask, tree_entries, tree_words, leaf_value,
    tree_leaves, init, out,
):  # fmt: skip
    # Sums of exit-leaf values for rows lo..lo+BLOCK of X (fewer at the end).
    n, nf = X.shape
    m = min(n, lo + BLOCK) - lo
    xb = np.zeros((nf, BLOCK), dtype=np.float32)
    _feature_block(X, lo, m, xb)
    acc = np.full(BLOCK, init, dtype=out.dtype)
    bits = np.empty((max(1, tree_words.max()), BLOCK), dtype=np.uint64)
    leaf = np.empty(BLOCK, dtype=np.int64)
    for t in range(tree_words.size):
        _exit_leaves(
            xb, t, feature, threshold, nan_right, word, mask, tree_entries, tree_words, bits, leaf
        )
        base = tree_leaves[t]
        for r in range(BLOCK):  # tree order per row: the same sums as the walks
            acc[r] = acc[r] + leaf_value[base + leaf[r]]
    for i in range(m):
        out[lo + i] = acc[i]


@numba.njit(cache=True, nogil=True, parallel=True)
def _bitvector_batch(
    X, feature, threshold, nan_right, word, mask, tree_entries, tree_words, leaf_value,
    tree_leaves, init, out,
):  # fmt: skip
    # Blocks in parallel. The block work lives in a plain function: a parallel kernel's
    # compile time grows with its body, and Lambda compiles at every cold start.
    for b in numba.prange((X.shape[0] + BLOCK - 1) // BLOCK):
        _bitvector_block(
            X, b * BLOCK, feature, threshold, nan_right, word, mask, tree_entries, tree_words,
            leaf_value, tree_leaves, init, out,
        )  # fmt: skip


def _batch(bv: _Bitvectors, X: np.ndarray, init, dtype) -> np.ndarray:
    out = np.empty(X.shape[0], dtype=dtype)
    _bitvector_batch(np.ascontiguousarray(X, dtype=np.float64), *bv.arrays(), init, out)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _step_lt(v, node, nodes, fview):
    # XGBoost: x < t goes left; NaN follows the node's default direction.
    code = nodes[node, 1]
    go_left = np.int32(v < fview[node, 2]) | (np.int32(v != v) & (code & 1))
    return nodes[node, 0] + 1 - go_left


@numba.njit(cache=True, nogil=True, inline="always")
def _step_le(v, node, nodes, fview):
    # sklearn: x <= t goes left (t already rounded down to float32); NaN per missing_go_to_left.
    code = nodes[node, 1]
    go_left = np.int32(v <= fview[node, 2]) | (np.int32(v != v) & (code & 1))
    return nodes[node, 0] + 1 - go_left


# --------------------------------------------------------------------------------------
# XGBoost
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XGBTrees:
    """A binary:logistic XGBoost booster as packed node records (see the module docstring)."""

    packed: _Packed
    bits: _Bitvectors
    paths: _LeafPaths
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
            mean = _node_means(left, right, cond, hess)
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
        packed = _pack(trees, np.float32)
        return cls(
            packed=packed,
            bits=_bitvectors(packed, right_when_ge=True),
            paths=_leaf_paths(packed, num_features),
            base_margin=np.float32(base_margin),
            bias=np.float32(bias),
            num_features=num_features,
            feature_names=tuple(names) if names else None,
        )

    def margin_row(self, x: np.ndarray) -> float:
        """Margin (log-odds) of one row ``x`` of shape (F,)."""
        p = self.packed
        return float(
            _xgb_margin_row(x, p.nodes, p.fview, p.value, p.roots, p.depth, self.base_margin)
        )

    def margin_contribs_row(self, x: np.ndarray, out: np.ndarray) -> float:
        """Margin of one row and its Saabas attributions written into ``out`` (F + 1,).

        ``out[:F]`` are per-feature contributions, ``out[F]`` the bias; they sum to the margin.
        """
        p = self.packed
        return float(
            _xgb_margin_contribs_row(
                x, p.nodes, p.fview, p.value, p.roots, p.depth, self.base_margin, self.bias, out
            )
        )

    def margins(self, X: np.ndarray) -> np.ndarray:
        """Margins of every row of ``X`` (n, F) as float32 (blocks of rows in parallel)."""
        return _batch(self.bits, X, self.base_margin, np.float32)

    def margins_contribs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Margins (n,) and Saabas attributions (n, F + 1) of every row of ``X``.

        Bit-identical to ``margin_contribs_row`` on each row.
        """
        paths = self.paths
        n = X.shape[0]
        margins = np.empty(n, dtype=np.float32)
        contribs = np.empty((n, self.num_features + 1), dtype=np.float32)
        _xgb_margin_contribs_batch(
            np.ascontiguousarray(X, dtype=np.float64),
            *self.bits.arrays(),
            paths.feature,
            paths.delta,
            self.packed.depth,
            self.base_margin,
            self.bias,
            margins,
            contribs,
        )
        return margins, contribs


def _node_means(left, right, value, hess) -> np.ndarray:
    """Cover-weighted mean leaf value under each node, in float32 as XGBoost computes it."""
    mean = np.zeros(left.size, dtype=np.float32)
    done = np.zeros(left.size, dtype=bool)
    stack = [0]
    while stack:  # post-order without recursion
        i = stack[-1]
        if left[i] == LEAF:
            mean[i] = value[i]
            done[i] = True
            stack.pop()
        elif done[left[i]] and done[right[i]]:
            lc, rc = left[i], right[i]
            acc = np.float32(mean[lc] * hess[lc])
            acc = np.float32(acc + np.float32(mean[rc] * hess[rc]))
            mean[i] = np.float32(acc / hess[i]) if hess[i] != 0 else np.float32(0)
            done[i] = True
            stack.pop()
        else:
            stack.extend((int(left[i]), int(right[i])))
    return mean


# Single-row kernels walk four trees at once: their steps are independent, so the CPU
# overlaps the four memory-latency chains (~1.8x faster than one tree at a time). Leaves
# are fixed points, so each group runs for its deepest tree's depth without leaf checks;
# leaf values are still added in tree order (float sums identical to one-at-a-time).


@numba.njit(cache=True, nogil=True)
def _xgb_margin_row(x, nodes, fview, value, roots, depth, base):
    acc = np.float32(base)
    nt = roots.size
    t = 0
    while t < nt:
        a = roots[t]
        b = roots[min(t + 1, nt - 1)]
        c = roots[min(t + 2, nt - 1)]
        d = roots[min(t + 3, nt - 1)]
        steps = depth[t]
        for k in range(t + 1, min(t + 4, nt)):
            steps = max(steps, depth[k])
        for _ in range(steps):
            a = _step_lt(np.float32(x[nodes[a, 1] >> 1]), a, nodes, fview)
            b = _step_lt(np.float32(x[nodes[b, 1] >> 1]), b, nodes, fview)
            c = _step_lt(np.float32(x[nodes[c, 1] >> 1]), c, nodes, fview)
            d = _step_lt(np.float32(x[nodes[d, 1] >> 1]), d, nodes, fview)
        acc = np.float32(acc + value[a])
        if t + 1 < nt:
            acc = np.float32(acc + value[b])
        if t + 2 < nt:
            acc = np.float32(acc + value[c])
        if t + 3 < nt:
            acc = np.float32(acc + value[d])
        t += 4
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _step_credit(x, node, nodes, fview, out, live):
    # One XGBoost step that also credits mean(child) - mean(node) to the split feature.
    # At a leaf (code -1) the credit goes to out[-1] (the bias slot) times 0: a no-op.
    code = nodes[node, 1]
    nxt = _step_lt(np.float32(x[code >> 1]), node, nodes, fview)
    out[code >> 1] += fview[nxt, 3] * np.float32(live * (code >= 0))
    return nxt


@numba.njit(cache=True, nogil=True)
def _xgb_margin_contribs_row(x, nodes, fview, value, roots, depth, base, bias, out):
    nf = out.size - 1
    for j in range(nf):
        out[j] = 0.0
    out[nf] = bias
    acc = np.float32(base)
    nt = roots.size
    t = 0
    while t < nt:
        # Trees past the end repeat the last one with live = 0 (no credit, value skipped).
        a = roots[t]
        b = roots[min(t + 1, nt - 1)]
        c = roots[min(t + 2, nt - 1)]
        d = roots[min(t + 3, nt - 1)]
        lb, lc, ld = int(t + 1 < nt), int(t + 2 < nt), int(t + 3 < nt)
        steps = depth[t]
        for k in range(t + 1, min(t + 4, nt)):
            steps = max(steps, depth[k])
        for _ in range(steps):
            a = _step_credit(x, a, nodes, fview, out, 1)
            b = _step_credit(x, b, nodes, fview, out, lb)
            c = _step_credit(x, c, nodes, fview, out, lc)
            d = _step_credit(x, d, nodes, fview, out, ld)
        acc = np.float32(acc + value[a])
        if lb:
            acc = np.float32(acc + value[b])
        if lc:
            acc = np.float32(acc + value[c])
        if ld:
            acc = np.float32(acc + value[d])
        t += 4
    return acc


@numba.njit(cache=True, nogil=True)
def _xgb_margin_contribs_block(
    X, lo, feature, threshold, nan_right, word, mask, tree_entries, tree_words, leaf_value,
    tree_leaves, path_feature, path_delta, depth, base, bias, margins, contribs,
):  # fmt: skip
    # Exit leaves from the bitvectors, then each leaf's path credits in exactly the order
    # _xgb_margin_contribs_row makes them (groups of four trees, level by level, trees in
    # order within a level), so batch attributions equal single-row ones bit for bit.
    n, nf = X.shape
    nt = tree_words.size
    m = min(n, lo + BLOCK) - lo
    xb = np.zeros((nf, BLOCK), dtype=np.float32)
    _feature_block(X, lo, m, xb)
    acc = np.full(BLOCK, base, dtype=np.float32)
    bits = np.empty((max(1, tree_words.max()), BLOCK), dtype=np.uint64)
    leaves = np.empty((4, BLOCK), dtype=np.int64)
    for i in range(m):
        row = contribs[lo + i]
        row[:] = 0.0
        row[nf] = bias
    for t in range(0, nt, 4):
        g = min(4, nt - t)
        steps = 0
        for k in range(g):
            _exit_leaves(
                xb, t + k, feature, threshold, nan_right, word, mask, tree_entries, tree_words,
                bits, leaves[k],
            )  # fmt: skip
            first = tree_leaves[t + k]
            for r in range(BLOCK):
                leaves[k, r] += first
                acc[r] = acc[r] + leaf_value[leaves[k, r]]
            steps = max(steps, depth[t + k])
        for i in range(m):
            row = contribs[lo + i]
            for s in range(steps):
                for k in range(g):  # past a path's end: + 0 to the bias slot
                    leaf = leaves[k, i]
                    row[path_feature[leaf, s]] += path_delta[leaf, s]
    for i in range(m):
        margins[lo + i] = acc[i]


@numba.njit(cache=True, nogil=True, parallel=True)
def _xgb_margin_contribs_batch(
    X, feature, threshold, nan_right, word, mask, tree_entries, tree_words, leaf_value,
    tree_leaves, path_feature, path_delta, depth, base, bias, margins, contribs,
):  # fmt: skip
    for b in numba.prange((X.shape[0] + BLOCK - 1) // BLOCK):
        _xgb_margin_contribs_block(
            X, b * BLOCK, feature, threshold, nan_right, word, mask, tree_entries, tree_words,
            leaf_value, tree_leaves, path_feature, path_delta, depth, base, bias, margins,
            contribs,
        )  # fmt: skip


# --------------------------------------------------------------------------------------
# Isolation forest
# --------------------------------------------------------------------------------------


def float32_at_most(threshold: np.ndarray) -> np.ndarray:
    """Largest float32 not above each float64 threshold.

    For any float32 ``x``: ``float64(x) <= t`` exactly when ``x <= float32_at_most(t)``.
    """
    t = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


@dataclass(frozen=True)
class IForestTrees:
    """An isolation forest as packed node records (see the module docstring)."""

    packed: _Packed
    bits: _Bitvectors
    denominator: float
    """``n_trees * c(max_samples)``; 0 means sklearn's constant score -0.5."""
    num_features: int

    @property
    def num_trees(self) -> int:
        return int(self.packed.roots.size)

    @classmethod
    def from_forest(cls, forest: ForestArrays) -> IForestTrees:
        """Re-lay a ``components.contracts.forest.ForestArrays`` (``forest.npz``)."""
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
                    "threshold": float32_at_most(forest.threshold[lo:hi]),
                    "nan_left": forest.missing_left[lo:hi].astype(np.int64),
                    "value": forest.path_length[lo:hi],
                }
            )
        packed = _pack(trees, np.float64)
        return cls(
            packed=packed,
            bits=_bitvectors(packed, right_when_ge=False),
            denominator=float(forest.n_trees * forest.c_max_samples),
            num_features=int(forest.n_features),
        )

    @classmethod
    def from_sklearn(cls, model) -> IForestTrees:
        """Convert a fitted ``sklearn.ensemble.IsolationForest`` (tests and tools only)."""
        from components.contracts.forest import ForestArrays

        return cls.from_forest(ForestArrays.from_sklearn(model))

    def _finish(self, total: float) -> float:
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
        return self._finish(_iforest_path_row(x, p.nodes, p.fview, p.value, p.roots, p.depth))

    def scores(self, X: np.ndarray) -> np.ndarray:
        """sklearn ``score_samples`` of every row of ``X`` (blocks of rows in parallel)."""
        out = _batch(self.bits, X, 0.0, np.float64)
        if self.denominator == 0:
            return np.full_like(out, -0.5)
        return -(2.0 ** (-(out / self.denominator)))


@numba.njit(cache=True, nogil=True)
def _iforest_path_row(x, nodes, fview, value, roots, depth):
    total = 0.0
    nt = roots.size
    t = 0
    while t < nt:
        a = roots[t]
        b = roots[min(t + 1, nt - 1)]
        c = roots[min(t + 2, nt - 1)]
        d = roots[min(t + 3, nt - 1)]
        steps = depth[t]
        for k in range(t + 1, min(t + 4, nt)):
            steps = max(steps, depth[k])
        for _ in range(steps):
            a = _step_le(np.float32(x[nodes[a, 1] >> 1]), a, nodes, fview)
            b = _step_le(np.float32(x[nodes[b, 1] >> 1]), b, nodes, fview)
            c = _step_le(np.float32(x[nodes[c, 1] >> 1]), c, nodes, fview)
            d = _step_le(np.float32(x[nodes[d, 1] >> 1]), d, nodes, fview)
        total += value[a]  # tree order, like sklearn's accumulation
        if t + 1 < nt:
            total += value[b]
        if t + 2 < nt:
            total += value[c]
        if t + 3 < nt:
            total += value[d]
        t += 4
    return total


# --------------------------------------------------------------------------------------
# Both models on one row, in one compiled call (the single-request hot path)
# --------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def top_positive(contribs, top):
    """Fill ``top`` with the indices of the largest positive ``contribs[:-1]``, descending.

    Unused slots are ``-1``. Returns the number of slots filled.
    """
    k = top.size
    for j in range(k):
        top[j] = -1
    filled = 0
    for f in range(contribs.size - 1):
        v = contribs[f]
        if not v > 0.0:
            continue
        pos = filled if filled < k else k
        while pos > 0 and contribs[top[pos - 1]] < v:
            pos -= 1
        if pos < k:
            last = filled if filled < k else k - 1
            for m in range(last, pos, -1):
                top[m] = top[m - 1]
            top[pos] = f
            if filled < k:
                filled += 1
    return filled


@numba.njit(cache=True, nogil=True, parallel=True)
def top_positive_batch(contribs, top):
    """Row-wise ``top_positive`` over (n, F + 1) contributions into (n, k) ``top``."""
    for i in numba.prange(contribs.shape[0]):
        top_positive(contribs[i], top[i])


@numba.njit(cache=True, nogil=True)
def _score_pair_row(
    x,
    xnodes,
    xfview,
    xvalue,
    xroots,
    xdepth,
    base,
    bias,
    fnodes,
    ffview,
    fvalue,
    froots,
    fdepth,
    contribs,
    top,
):
    margin = _xgb_margin_contribs_row(
        x, xnodes, xfview, xvalue, xroots, xdepth, base, bias, contribs
    )
    path = _iforest_path_row(x, fnodes, ffview, fvalue, froots, fdepth)
    n_top = top_positive(contribs, top)
    return margin, path, n_top


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
    margin, path, n_top = _score_pair_row(
        x,
        xp.nodes,
        xp.fview,
        xp.value,
        xp.roots,
        xp.depth,
        xgb.base_margin,
        xgb.bias,
        fp.nodes,
        fp.fview,
        fp.value,
        fp.roots,
        fp.depth,
        contribs,
        top,
    )
    return float(margin), forest._finish(path), int(n_top)
