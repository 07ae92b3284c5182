"""The compiled tree walks: one single-row walk and one batch kernel for both models.

Why not ``Booster.inplace_predict`` / ``IsolationForest.score_samples`` per request: on this
machine one single-row ``inplace_predict`` costs ~200 us and sklearn ~4.7 ms, mostly call
overhead. A numba walk over plain arrays (``layout``) costs a few microseconds per row for
the same trees and gives exactly the same numbers.

The variants are parameters, not copies:

* the leaf value dtype (``value`` / ``init``): float32 accumulated in float32 for XGBoost
  margins (what XGBoost's CPU predictor does), float64 for isolation-forest path lengths
  (what sklearn sums); numba specializes on the dtype;
* attributions or not (``out`` an array or None in the row walk, ``credit`` in the batch
  kernel): Saabas attributions, what ``pred_contribs=True, approx_contribs=True`` returns;
  each step credits ``mean(child) - mean(parent)`` to the split feature, a node's mean
  being its cover-weighted average leaf value;
* ``x < t`` vs sklearn's ``x <= t``: not a kernel variant; ``layout`` stores sklearn's
  thresholds as the equivalent ``x < t'`` at load, so both models take the same step.

Single rows walk four trees at once: their steps are independent, so the CPU overlaps the
four memory-latency chains (~1.8x faster than one tree at a time). One step reads one
record (one cache line) and picks the child without a branch: ``child + 1 - go_left``. At a
leaf ``go_left`` is always 1 (``x < inf``, or NaN going left), so a leaf is a fixed point
and each group runs for its deepest tree's depth without leaf checks; leaf values are
still added in tree order (float sums identical to one tree at a time).

Batches use the bitvectors (``layout.Bitvectors``): each node costs a compare and an AND per
row, vectorized over a block of rows, instead of a dependent load chain per level (~4x the
throughput of a level-synchronous walk here). Batch attributions start from the same exit
leaves and replay each leaf's path credits in the single-row walk's order (groups of four
trees, level by level), so batch and single-row attributions are bit-identical.

Every kernel is compiled with ``cache=True``; ``serving`` points NUMBA_CACHE_DIR at a
writable folder (``/tmp`` on Lambda) and the model loader warms the kernels up at load time
so no JIT compilation happens inside a request; the images ship them precompiled
(``serving.warm``, ``NUMBA_CACHE_SEED``). The batch kernel keeps its work in a plain
function called from a thin ``prange`` loop: a parallel kernel's compile time grows with
its body.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

BLOCK = 128
"""Rows scored together in the batch kernel: every tree's bitvectors for the block stay in L1."""
ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)

# ------------------------------------------------------------------------------ single row


@numba.njit(cache=True, nogil=True, inline="always")
def _step(x, node, nodes, fview):
    # x < t goes left; NaN follows the node's flag. Branch-free.
    code = nodes[node, 1]
    v = np.float32(x[code >> 1])
    go_left = np.int32(v < fview[node, 2]) | (np.int32(v != v) & (code & 1))
    return nodes[node, 0] + 1 - go_left


@numba.njit(cache=True, nogil=True, inline="always")
def _credit(out, node, nxt, nodes, fview, live):
    # mean(child) - mean(node) to the split feature; at a leaf (code -1) to out[-1], the
    # bias slot, times 0; trees past the end (live = 0) add 0.
    code = nodes[node, 1]
    out[code >> 1] += fview[nxt, 3] * np.float32(live * (code >= 0))


@numba.njit(cache=True, nogil=True)
def walk_row(x, nodes, fview, value, roots, depth, acc, out):
    """Sum of the leaf values row ``x`` reaches, added to ``acc`` in tree order.

    ``out``: None, or an (F + 1,) array (reset by ``reset_contribs``) that receives the
    path attributions. The variant is chosen by type, so numba compiles the attribution-free
    walk without the credit code (a run-time flag here costs ~5x on one row).
    """
    nt = roots.size
    t = 0
    while t < nt:
        # Trees past the end repeat the last one, without credit and with value skipped.
        a = roots[t]
        b = roots[min(t + 1, nt - 1)]
        c = roots[min(t + 2, nt - 1)]
        d = roots[min(t + 3, nt - 1)]
        lb, lc, ld = int(t + 1 < nt), int(t + 2 < nt), int(t + 3 < nt)
        steps = depth[t]
        for k in range(t + 1, min(t + 4, nt)):
            steps = max(steps, depth[k])
        for _ in range(steps):
            a2 = _step(x, a, nodes, fview)
            b2 = _step(x, b, nodes, fview)
            c2 = _step(x, c, nodes, fview)
            d2 = _step(x, d, nodes, fview)
            if out is not None:
                _credit(out, a, a2, nodes, fview, 1)
                _credit(out, b, b2, nodes, fview, lb)
                _credit(out, c, c2, nodes, fview, lc)
                _credit(out, d, d2, nodes, fview, ld)
            a, b, c, d = a2, b2, c2, d2
        acc = acc + value[a]
        if lb:
            acc = acc + value[b]
        if lc:
            acc = acc + value[c]
        if ld:
            acc = acc + value[d]
        t += 4
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def reset_contribs(out, bias):
    """Attributions before any credit: 0 per feature, the bias in the last slot."""
    nf = out.size - 1
    for j in range(nf):
        out[j] = 0.0
    out[nf] = bias


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
def pair_row(
    x, xnodes, xfview, xvalue, xroots, xdepth, base, bias,
    fnodes, ffview, fvalue, froots, fdepth, contribs, top,
):  # fmt: skip
    """Both models on one row in one compiled call: (margin, path-length sum, n_top)."""
    reset_contribs(contribs, bias)
    margin = walk_row(x, xnodes, xfview, xvalue, xroots, xdepth, base, contribs)
    path = walk_row(x, fnodes, ffview, fvalue, froots, fdepth, 0.0, None)
    return margin, path, top_positive(contribs, top)


# ------------------------------------------------------------------------------ batches


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


@numba.njit(cache=True, nogil=True)
def _block(
    X, lo, feature, threshold, nan_right, word, mask, tree_entries, tree_words, leaf_value,
    tree_leaves, path_feature, path_delta, depth, init, credit, bias, out, contribs,
):  # fmt: skip
    # Rows lo..lo+BLOCK of X (fewer at the end): exit leaves from the bitvectors, leaf values
    # summed per row in tree order; with credit, each leaf's path credits in exactly the
    # order walk_row makes them (groups of four trees, level by level, trees in order).
    n, nf = X.shape
    nt = tree_words.size
    m = min(n, lo + BLOCK) - lo
    xb = np.zeros((nf, BLOCK), dtype=np.float32)
    for i in range(m):  # feature-major: one entry reads one contiguous row
        for j in range(nf):
            xb[j, i] = np.float32(X[lo + i, j])
    acc = np.full(BLOCK, init, dtype=out.dtype)
    bits = np.empty((max(1, tree_words.max()), BLOCK), dtype=np.uint64)
    leaves = np.empty((4, BLOCK), dtype=np.int64)
    if credit:
        for i in range(m):
            reset_contribs(contribs[lo + i], bias)
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
        if credit:
            for i in range(m):
                row = contribs[lo + i]
                for s in range(steps):
                    for k in range(g):  # past a path's end: + 0 to the bias slot
                        leaf = leaves[k, i]
                        row[path_feature[leaf, s]] += path_delta[leaf, s]
    for i in range(m):
        out[lo + i] = acc[i]


@numba.njit(cache=True, nogil=True, parallel=True)
def tree_batch(
    X, feature, threshold, nan_right, word, mask, tree_entries, tree_words, leaf_value,
    tree_leaves, path_feature, path_delta, depth, init, credit, bias, out, contribs,
):  # fmt: skip
    """Blocks of rows in parallel (``_block``); fills ``out`` (n,) and, with credit, ``contribs``."""
    for b in numba.prange((X.shape[0] + BLOCK - 1) // BLOCK):
        _block(
            X, b * BLOCK, feature, threshold, nan_right, word, mask, tree_entries, tree_words,
            leaf_value, tree_leaves, path_feature, path_delta, depth, init, credit, bias, out,
            contribs,
        )  # fmt: skip
