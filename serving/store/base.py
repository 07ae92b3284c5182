"""The store interface, the live/frozen orchestration and the backend factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from components.contracts import features as feats

if TYPE_CHECKING:
    from serving.settings import ServingSettings

log = logging.getLogger(__name__)

LIVE = "live"
FROZEN = "frozen"
FALLBACK_REASONS = ("timeout", "unreachable", "error", "backoff")
"""Label values of ``pos_risk_profile_fallbacks_total`` (bounded)."""


FoldItem = tuple[str, "str | None", str, np.ndarray]
"""(cashier_id, store_id, transaction_id, values): the arguments of one ``fold``."""


class StoreError(Exception):
    """The store did not answer in time or at all; ``reason`` is one of FALLBACK_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ProfileStore(Protocol):
    """A backend: atomically return a transaction's prior and fold it in."""

    name: str

    def fold(
        self, cashier_id: str, store_id: str | None, transaction_id: str, values: np.ndarray
    ) -> np.ndarray:
        """The (PRIOR_WIDTH,) prior, then fold ``values`` (FOLD_WIDTH, ``feats.fold_values``) in:
        its statistics row added to the cashier's, store's and global sums, the cashier's
        window state folded by ``windows.fold_window``.

        ``store_id`` None means the cashier's home store (the last one it was seen in). A
        ``transaction_id`` already folded is not folded again. Raises ``StoreError``.
        """
        ...

    def fold_many(self, items: Sequence[FoldItem]) -> list[np.ndarray]:
        """``fold`` of every item in order (same priors, same dedupe), in one round trip."""
        ...

    def seed(self, index: feats.ProfileIndex, bundle_sha256: str) -> int:
        """Write the bundle's profiles where no key exists yet; returns keys written."""
        ...

    def close(self) -> None: ...


def key_prefix(namespace: str) -> str:
    """Every key of one feature version: one hash tag, so one Redis cluster slot."""
    return f"{{{namespace}:f{feats.FEATURE_VERSION}}}:"


class LiveProfiles:
    """Prior statistics for requests: the live store when it answers, else the frozen profile.

    Args:
        store: The backend, or None to always use the frozen profile.
        frozen: The bundle's profile index (the fallback).
        retry_s: After a failure, skip the store for this many seconds.
        on_lookup: Called with (source, fallback reason or None) for every request.
    """

    def __init__(
        self,
        store: ProfileStore | None,
        frozen: feats.ProfileIndex,
        *,
        retry_s: float = 1.0,
        on_lookup: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.store = store
        self.frozen = frozen
        self._retry_s = retry_s
        self._retry_at = 0.0
        self._on_lookup = on_lookup or (lambda source, reason: None)

    def prior(self, request: Any, raw: np.ndarray) -> tuple[np.ndarray, str]:
        """(prior, source) for one request whose encoded row is ``raw`` (1, RAW_INPUTS)."""
        if self.store is None or time.monotonic() < self._retry_at:
            return self._frozen(request, None if self.store is None else "backoff")
        try:
            prior = self.store.fold(*_fold_item(request, raw))
        except StoreError as exc:
            return self._failed(request, exc)
        self._on_lookup(LIVE, None)
        return prior, LIVE

    async def prior_async(self, request: Any, raw: np.ndarray) -> tuple[np.ndarray, str]:
        """``prior`` that lets the event loop serve other requests while a remote store
        answers (stores with ``fold_async``; the in-process store answers at once)."""
        fold_async = getattr(self.store, "fold_async", None)
        if fold_async is None or time.monotonic() < self._retry_at:
            return self.prior(request, raw)
        try:
            prior = await fold_async(*_fold_item(request, raw))
        except StoreError as exc:
            return self._failed(request, exc)
        self._on_lookup(LIVE, None)
        return prior, LIVE

    def prior_many(self, requests: Sequence[Any], raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(priors (n, PRIOR_WIDTH), sources) of a batch, folded in order in one store call;
        ``raw`` is the batch's (n, RAW_INPUTS) rows. A failed call: the whole batch frozen."""
        if self.store is None or time.monotonic() < self._retry_at or not len(requests):
            return self._frozen_many(requests, None if self.store is None else "backoff")
        try:
            priors = self.store.fold_many(_fold_items(requests, raw))
        except StoreError as exc:
            return self._failed_many(requests, exc)
        return self._live_many(priors)

    async def prior_many_async(
        self, requests: Sequence[Any], raw: np.ndarray
    ) -> tuple[np.ndarray, list[str]]:
        """``prior_many`` without blocking the event loop (stores with ``fold_many_async``)."""
        fold_many_async = getattr(self.store, "fold_many_async", None)
        if fold_many_async is None or time.monotonic() < self._retry_at or not len(requests):
            return self.prior_many(requests, raw)
        try:
            priors = await fold_many_async(_fold_items(requests, raw))
        except StoreError as exc:
            return self._failed_many(requests, exc)
        return self._live_many(priors)

    def _live_many(self, priors: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
        for _ in priors:
            self._on_lookup(LIVE, None)
        return np.array(priors, dtype=np.float64), [LIVE] * len(priors)

    def _failed_many(
        self, requests: Sequence[Any], exc: StoreError
    ) -> tuple[np.ndarray, list[str]]:
        self._back_off(exc)
        return self._frozen_many(requests, exc.reason)

    def _frozen_many(
        self, requests: Sequence[Any], reason: str | None
    ) -> tuple[np.ndarray, list[str]]:
        priors = np.empty((len(requests), feats.PRIOR_WIDTH), dtype=np.float64)
        for i, request in enumerate(requests):
            priors[i] = self._frozen(request, reason)[0]
        return priors, [FROZEN] * len(requests)

    def _failed(self, request: Any, exc: StoreError) -> tuple[np.ndarray, str]:
        self._back_off(exc)
        return self._frozen(request, exc.reason)

    def _back_off(self, exc: StoreError) -> None:
        now = time.monotonic()
        if now >= self._retry_at:  # the calls in flight with this one fail together: log once
            log.warning("profile store %s: %s; frozen profiles", self.store.name, exc)
        self._retry_at = now + self._retry_s

    def _frozen(self, request: Any, reason: str | None) -> tuple[np.ndarray, str]:
        self._on_lookup(FROZEN, reason)
        return self.frozen.prior_for(request["cashier_id"], request.get("store_id")), FROZEN


def _fold_item(request: Any, raw: np.ndarray) -> FoldItem:
    values = feats.fold_values(raw)[0]
    return request["cashier_id"], request.get("store_id"), request["transaction_id"], values


def _fold_items(requests: Sequence[Any], raw: np.ndarray) -> list[FoldItem]:
    values = feats.fold_values(raw)
    return [
        (r["cashier_id"], r.get("store_id"), r["transaction_id"], values[i])
        for i, r in enumerate(requests)
    ]


def build_store(
    settings: ServingSettings, index: feats.ProfileIndex, bundle_sha256: str
) -> ProfileStore | None:
    """The backend ``settings`` name, seeded from ``index`` (None for ``frozen``).

    A Redis store that cannot be seeded now is still returned: requests fall back to the
    frozen profile until it answers, and ``python -m serving.store seed`` seeds it later.
    """
    kind = settings.profile_store
    if kind == "frozen":
        return None
    if kind == "memory":
        from serving.store.memory import InProcessStore

        store: ProfileStore = InProcessStore(dedupe_size=settings.dedupe_size)
    else:
        from serving.store.redis_store import RedisStore

        assert settings.redis_url  # settings validate it
        store = RedisStore(
            settings.redis_url,
            namespace=settings.store_namespace,
            deadline_s=settings.store_deadline_ms / 1000.0,
            dedupe_ttl_s=settings.dedupe_ttl_s,
        )
    try:
        written = store.seed(index, bundle_sha256)
        log.info("profile store %s: seeded %d keys", store.name, written)
    except StoreError as exc:
        log.warning("profile store %s not seeded (%s): frozen profiles until it is", kind, exc)
    return store
