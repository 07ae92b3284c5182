"""Tree models as flat arrays: the layouts the engine's kernels walk (pure numpy, no numba).

Both models are stored so that ONE comparison decides every split: a row goes left when
``float32(x) < threshold`` (NaN follows the node's flag). XGBoost already compares that way;
sklearn's ``float64(float32(x)) <= t`` is rewritten at load time as ``x < t'`` with ``t'``
the next float32 above ``float32_at_most(t)``, the same test for every float32 ``x``.
The variants that remain (leaf value dtype, attributions or not) are kernel parameters.

Layout (``Packed``): nodes are renumbered breadth-first per tree so siblings are adjacent
(right child = left child + 1) and packed into one 16-byte record per node, an ``(n, 4)``
int32 array with a float32 view of the same memory:

* ``[0]`` left child (global index); a leaf points to itself;
* ``[1]`` ``feature << 1 | nan_goes_left``; ``-1`` at leaves;
* ``[2]`` float32 threshold (left when ``x < threshold``); ``+inf`` at leaves;
* ``[3]`` float32 Saabas delta (XGBoost; ``mean(node) - mean(parent)``), unused otherwise.

Batches use a second form of the same trees, QuickScorer's bitvectors (``Bitvectors``,
Lucchese et al., SIGIR 2015): the leaves of a tree are numbered left to right, one bit each;
every split node is an entry ``(feature, threshold, nan_right, word, mask)`` whose mask
clears the bits of its left subtree for rows it sends right (``x > nextafter(t, -inf)``,
i.e. ``x >= t``); the exit leaf is the lowest set bit. Exact, not approximate: the same
comparisons pick the same leaf. ``LeafPaths`` stores each leaf's Saabas credits so batch
attributions replay the single-row walk's order bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEAF = -1


class TreeModelError(ValueError):
    """A model cannot be converted to flat arrays (unsupported objective, categorical split...)."""


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
class Packed:
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


def pack(trees: list[dict[str, np.ndarray]], value_dtype) -> Packed:
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
    return Packed(
        nodes=np.ascontiguousarray(np.concatenate(records)),
        value=np.concatenate(values),
        roots=np.asarray(roots, dtype=np.int32),
        depth=np.asarray(depths, dtype=np.int32),
    )


@dataclass(frozen=True)
class Bitvectors:
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


def bitvectors(p: Packed) -> Bitvectors:
    """Build the entries of packed trees.

    A node sends ``x >= t`` right (left is ``x < t``); stored as ``x > nextafter(t, -inf)``,
    the same test for every float32 ``x``.
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
    if np.any(threshold == -np.inf):
        raise TreeModelError("a split condition of -inf is not supported")
    threshold = np.nextafter(threshold, np.float32(-np.inf))
    return Bitvectors(
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
class LeafPaths:
    """Per leaf (in ``Bitvectors`` order), the Saabas credits of its path, root first.

    Paths shorter than the deepest tree are padded with a credit of 0 to the bias slot
    (what the walk adds at a leaf), so the kernel needs no length check.
    """

    feature: np.ndarray
    """(L, D) int32 split feature at each level of the path (F, the bias slot, past its end)."""
    delta: np.ndarray
    """(L, D) float32 ``mean(child) - mean(node)`` credited to that feature."""


def leaf_paths(p: Packed, num_features: int) -> LeafPaths:
    """The credits the attribution walk makes on the way to each leaf, in walk order."""
    child, code_of = p.nodes[:, 0].tolist(), p.nodes[:, 1].tolist()
    delta = p.fview[:, 3].tolist()
    width = max(1, int(p.depth.max()))
    feats: list[list[int]] = []
    deltas: list[list[float]] = []
    for root in p.roots:
        stack: list[tuple[int, list[int], list[float]]] = [(int(root), [], [])]
        while stack:  # the same pre-order as bitvectors: leaves come out left to right
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
    return LeafPaths(feature=feature, delta=out)


def node_means(left, right, value, hess) -> np.ndarray:
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


def left_below(threshold: np.ndarray) -> np.ndarray:
    """sklearn's ``float64(float32(x)) <= t`` as a ``float32(x) < t'`` test: ``t'`` per threshold.

    ``x <= float32_at_most(t)`` is ``x < nextafter(float32_at_most(t), +inf)`` for every
    float32 ``x`` (including +-inf), so both models walk with one comparison.
    """
    return np.nextafter(float32_at_most(threshold), np.float32(np.inf))
