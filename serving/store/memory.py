"""In-process profile store: the embedded default (one process, no server)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from components.contracts import features as feats
from components.contracts import windows
from serving.store.base import FoldItem


class InProcessStore:
    """Dicts of running statistics and window states, seeded from the bundle; retries
    deduplicated by an LRU.

    Handlers call it from the event-loop thread only (as the scorer), so each ``fold`` is
    atomic. New arrays are built on every fold (never in place): the seed arrays belong to
    the frozen ``ProfileIndex``, which must stay frozen for the fallback.
    """

    name = "memory"

    def __init__(self, *, dedupe_size: int = 100_000) -> None:
        self.cashiers: dict[str, np.ndarray] = {}
        self.stores: dict[str, np.ndarray] = {}
        self.global_stats = np.zeros(feats.STATS_WIDTH)
        self.home_store: dict[str, str] = {}
        self.windows: dict[str, np.ndarray] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedupe_size = dedupe_size
        self._zeros = np.zeros(feats.STATS_WIDTH)
        self._no_window = np.zeros(feats.WINDOW_WIDTH)
        self._seeded: str | None = None

    def seed(self, index: feats.ProfileIndex, bundle_sha256: str) -> int:
        if self._seeded is not None:
            return 0
        written = 0
        tables = (
            (self.cashiers, index.cashiers),
            (self.stores, index.stores),
            (self.windows, index.windows),
        )
        for table, source in tables:
            for key, stats in source.items():
                if key not in table:
                    table[key] = stats
                    written += 1
        for key, home in index.home_store.items():
            self.home_store.setdefault(key, home)
        self.global_stats = self.global_stats + index.global_stats
        self._seeded = bundle_sha256
        return written + 1

    def fold(
        self, cashier_id: str, store_id: str | None, transaction_id: str, values: np.ndarray
    ) -> np.ndarray:
        store = store_id or self.home_store.get(cashier_id)
        c = self.cashiers.get(cashier_id)
        s = self.stores.get(store) if store else None
        g = self.global_stats
        w = self.windows.get(cashier_id, self._no_window)
        prior = np.concatenate(
            (self._zeros if c is None else c, self._zeros if s is None else s, g, w)
        )
        seen = self._seen
        if transaction_id in seen:
            seen.move_to_end(transaction_id)
            return prior
        seen[transaction_id] = None
        if len(seen) > self._dedupe_size:
            seen.popitem(last=False)
        stats = values[: feats.STATS_WIDTH]
        self.cashiers[cashier_id] = stats.copy() if c is None else c + stats
        if store:
            self.stores[store] = stats.copy() if s is None else s + stats
        if store_id:
            self.home_store[cashier_id] = store_id
        self.global_stats = g + stats
        self.windows[cashier_id] = windows.fold_window(w, values)
        return prior

    def fold_many(self, items: Sequence[FoldItem]) -> list[np.ndarray]:
        return [self.fold(*item) for item in items]

    def close(self) -> None:
        pass
