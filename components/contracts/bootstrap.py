"""Block-bootstrap intervals: the one resampling primitive behind every interval that
evaluate reports and register's gate decides on.

Rows are resampled by blocks (cashiers): one cashier's rows are drawn together, because one
thief's thefts (or one clumsy cashier's voids) are not independent evidence. 95% percentile
intervals from ``BOOTSTRAP_DRAWS`` resamples, all draws in one vectorized product; seeded.
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_DRAWS = 200
"""Resamples behind every interval."""


class Blocks:
    """Cashier blocks of a set of rows (the test rows), resampled ``draws`` times."""

    def __init__(self, block_ids: np.ndarray, *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0):
        _, self.codes = np.unique(np.asarray(block_ids).astype(str), return_inverse=True)
        self.n_blocks = int(self.codes.max()) + 1 if self.codes.size else 0
        self.draws, self.seed = draws, seed

    def _weights(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(present block indices, (draws, k) resample counts over them)."""
        present = np.flatnonzero(
            np.bincount(self.codes, weights=rows, minlength=self.n_blocks) > 0
            if rows is not None
            else np.ones(self.n_blocks, dtype=bool)
        )
        k = present.size
        return present, np.random.default_rng(self.seed).multinomial(
            k, np.full(k, 1.0 / k), self.draws
        )

    def _sums(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.codes, weights=values, minlength=self.n_blocks)

    def rate(self, hit: np.ndarray, base: np.ndarray, rows: np.ndarray | None = None) -> dict:
        """``sum(hit & base) / sum(base)`` over ``rows`` (bool mask; all rows if None), with
        its 95% block-bootstrap interval (``value``, ``ci_low``, ``ci_high``, ``n`` = base count).

        A draw with an empty base is left out of the interval (NaN everywhere if all are)."""
        base = np.asarray(base, dtype=bool)
        hit = np.asarray(hit, dtype=bool) & base
        if rows is not None:
            base, hit = base & rows, hit & rows
        n = int(base.sum())
        if n == 0:
            return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
        num, den = self._sums(hit), self._sums(base)
        # Only the blocks present in ``rows`` are resampled (a cohort's own cashiers).
        present, w = self._weights(rows)
        d = w @ den[present]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = (w @ num[present]) / d
        ratios = ratios[d > 0]
        low, high = np.percentile(ratios, [2.5, 97.5]) if ratios.size else (math.nan, math.nan)
        return {"value": float(hit.sum() / n), "ci_low": float(low), "ci_high": float(high), "n": n}

    def _draw_rates(self, hit: np.ndarray, base: np.ndarray) -> np.ndarray:
        """``sum(hit & base) / sum(base)`` in each resample of ALL blocks (NaN: empty base)."""
        base = np.asarray(base, dtype=bool)
        present, w = self._weights(None)
        d = w @ self._sums(base)[present]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ self._sums(np.asarray(hit, dtype=bool) & base)[present]) / d

    @staticmethod
    def _interval(value: float, draws: np.ndarray, n: int) -> dict:
        draws = draws[np.isfinite(draws)]
        low, high = np.percentile(draws, [2.5, 97.5]) if draws.size else (math.nan, math.nan)
        return {"value": value, "ci_low": float(low), "ci_high": float(high), "n": n}

    def paired_difference(self, hit_a: np.ndarray, hit_b: np.ndarray, base: np.ndarray) -> dict:
        """``rate(hit_a, base) - rate(hit_b, base)`` with its 95% interval, both rates taken
        on the SAME resamples (paired: the noise the two share cancels)."""
        base = np.asarray(base, dtype=bool)
        n = int(base.sum())
        if n == 0:
            return self._interval(math.nan, np.array([]), 0)
        a, b = (np.asarray(h, dtype=bool) & base for h in (hit_a, hit_b))
        diffs = self._draw_rates(a, base) - self._draw_rates(b, base)
        return self._interval(float((a.sum() - b.sum()) / n), diffs, n)

    def rate_ratio(self, hit: np.ndarray, base_a: np.ndarray, base_b: np.ndarray) -> dict:
        """``rate(hit, base_a) / rate(hit, base_b)`` (e.g. one cohort's false-alarm rate over
        another's) with its 95% interval, both rates taken on the SAME resamples of all
        blocks; draws where either base is empty or the denominator rate is 0 are left out.
        ``n`` is ``base_a``'s count; the value is inf when ``rate(hit, base_b)`` is 0."""
        hit = np.asarray(hit, dtype=bool)
        a, b = np.asarray(base_a, dtype=bool), np.asarray(base_b, dtype=bool)
        if not a.any() or not b.any():
            return self._interval(math.nan, np.array([]), int(a.sum()))
        num, den = (hit & a).sum() / a.sum(), (hit & b).sum() / b.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(num / den) if den else (math.inf if num else math.nan)
            draws = self._draw_rates(hit, a) / self._draw_rates(hit, b)
        return self._interval(value, draws, int(a.sum()))
