"""Serving settings: one frozen object read from environment variables when asked.

Nothing happens at import time. ``ServingSettings.from_env()`` is called by ``create_app``
when no settings are passed (uvicorn's ``--factory`` and the Lambda shim).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def _bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r} is not a boolean (use true/false)")


def _number(name: str, default: float, kind: type[float] | type[int]) -> Any:
    value = _env(name)
    try:
        return default if value is None else kind(value)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name}={value!r} is not {what}") from exc


def _int(name: str, default: int) -> int:
    return _number(name, default, int)


def _float(name: str, default: float) -> float:
    return _number(name, default, float)


@dataclass(frozen=True, kw_only=True)
class ServingSettings:
    """How the app finds its model and guards its endpoints."""

    model_dir: str | None = None
    """Baked bundle folder (``MODEL_DIR``); wins over ``model_uri`` when both are set."""
    model_uri: str | None = None
    """Registry URI such as ``models:/cashier-integrity-risk@champion`` (``MODEL_URI``),
    downloaded once at start into ``download_dir``."""
    download_dir: str | None = None
    """Where a registry bundle is downloaded (``MODEL_DOWNLOAD_DIR``; default a temp folder)."""
    api_key: str | None = field(default=None, repr=False)
    """When set (``API_KEY``), every route except /healthz (and /metrics unless
    ``metrics_require_key``) requires header ``X-API-Key`` with this value."""
    metrics_require_key: bool = False
    """Protect /metrics with the API key too (``METRICS_REQUIRE_KEY``)."""
    metrics_mode: Literal["prometheus", "emf"] = "prometheus"
    """``prometheus`` (scraped /metrics) or ``emf`` (CloudWatch Embedded Metric Format log
    lines, for Lambda where instances are too short-lived to scrape) (``METRICS_MODE``)."""
    metrics_namespace: str = "CashierIntegrity"
    """CloudWatch namespace of EMF metrics (``METRICS_NAMESPACE``)."""
    max_batch: int = 1000
    """Most transactions per ``POST /v1/predict/batch`` call (``MAX_BATCH``)."""
    max_body_bytes: int = 2_000_000
    """Largest accepted request body in bytes (``MAX_BODY_BYTES``)."""
    top_reasons: int = 3
    """Reason codes returned per prediction (``TOP_REASONS``)."""
    psi_window: int = 5000
    """Recent scores kept for the PSI drift gauge (``PSI_WINDOW``)."""
    psi_every: int = 500
    """Recompute the PSI gauge every this many scores (``PSI_EVERY``)."""
    openapi: bool = True
    """Serve OpenAPI docs under /schema (``OPENAPI``)."""
    profile_store: Literal["memory", "redis", "frozen"] = "memory"
    """Where live cashier profiles are kept (``PROFILE_STORE``): ``memory`` (one process),
    ``redis`` (default when ``REDIS_URL`` is set) or ``frozen`` (the bundle's, never updated)."""
    redis_url: str | None = field(default=None, repr=False)
    """Redis/Valkey URL of the profile store (``REDIS_URL``, e.g. ``redis://host:6379/0``)."""
    store_namespace: str = "pos-risk"
    """Key namespace in Redis (``STORE_NAMESPACE``); keys also carry FEATURE_VERSION."""
    store_deadline_ms: float = 50.0
    """Longest wait for the profile store per request before the frozen profile is used
    (``STORE_DEADLINE_MS``)."""
    store_retry_s: float = 1.0
    """After a store failure, use the frozen profile for this many seconds (``STORE_RETRY_S``)."""
    dedupe_ttl_s: int = 86_400
    """How long Redis remembers a folded transaction_id (``DEDUPE_TTL_S``)."""
    dedupe_size: int = 100_000
    """transaction_ids the in-process store remembers (``DEDUPE_SIZE``)."""
    debug_features: bool = False
    """Return the served feature vector in each response (``DEBUG_FEATURES``; tests only)."""

    def __post_init__(self) -> None:
        if self.metrics_mode not in ("prometheus", "emf"):
            raise ValueError(f"METRICS_MODE={self.metrics_mode!r}: use prometheus or emf")
        for name in ("max_batch", "max_body_bytes", "psi_window", "psi_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.upper()} must be >= 1, got {getattr(self, name)}")
        if self.profile_store not in ("memory", "redis", "frozen"):
            raise ValueError(f"PROFILE_STORE={self.profile_store!r}: use memory, redis or frozen")
        if self.profile_store == "redis" and not self.redis_url:
            raise ValueError("PROFILE_STORE=redis needs REDIS_URL")
        for name in ("store_deadline_ms", "dedupe_ttl_s", "dedupe_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.upper()} must be > 0, got {getattr(self, name)}")
        if self.top_reasons < 0:
            raise ValueError(f"TOP_REASONS must be >= 0, got {self.top_reasons}")

    @classmethod
    def from_env(cls) -> ServingSettings:
        """Read ``MODEL_DIR``, ``MODEL_URI``, ``API_KEY``, ``METRICS_MODE``... (see README)."""
        return cls(
            model_dir=_env("MODEL_DIR"),
            model_uri=_env("MODEL_URI"),
            download_dir=_env("MODEL_DOWNLOAD_DIR"),
            api_key=_env("API_KEY"),
            metrics_require_key=_bool("METRICS_REQUIRE_KEY", False),
            metrics_mode=(_env("METRICS_MODE", "prometheus") or "prometheus").lower(),  # type: ignore[arg-type]
            metrics_namespace=_env("METRICS_NAMESPACE", "CashierIntegrity") or "",
            max_batch=_int("MAX_BATCH", 1000),
            max_body_bytes=_int("MAX_BODY_BYTES", 2_000_000),
            top_reasons=_int("TOP_REASONS", 3),
            psi_window=_int("PSI_WINDOW", 5000),
            psi_every=_int("PSI_EVERY", 500),
            openapi=_bool("OPENAPI", True),
            profile_store=(  # type: ignore[arg-type]
                _env("PROFILE_STORE", "redis" if _env("REDIS_URL") else "memory") or ""
            ).lower(),
            redis_url=_env("REDIS_URL"),
            store_namespace=_env("STORE_NAMESPACE", "pos-risk") or "",
            store_deadline_ms=_float("STORE_DEADLINE_MS", 50.0),
            store_retry_s=_float("STORE_RETRY_S", 1.0),
            dedupe_ttl_s=_int("DEDUPE_TTL_S", 86_400),
            dedupe_size=_int("DEDUPE_SIZE", 100_000),
            debug_features=_bool("DEBUG_FEATURES", False),
        )


def numba_cache_dir() -> str | None:
    """A writable NUMBA_CACHE_DIR when this package's folder is read-only (Lambda), else None.

    numba caches compiled kernels next to their source (``__pycache__``) when it can write
    there; on Lambda only /tmp is writable.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    package = Path(__file__).resolve().parent
    pycache = package / "__pycache__"
    writable = os.access(pycache, os.W_OK) if pycache.exists() else os.access(package, os.W_OK)
    if writable:
        return None
    return str(Path(tempfile.gettempdir()) / "numba-cache")


def seed_numba_cache(seed: str, cache_dir: str) -> bool:
    """Fill an empty (or missing) numba cache folder with a copy of ``seed``.

    A cache already holding files is left alone (a warm container keeps what it compiled).
    Copies into a temporary sibling and renames it into place, so a concurrent starter
    never sees half a cache. Returns whether anything was copied.
    """
    src, dst = Path(seed), Path(cache_dir)
    if not src.is_dir() or (dst.is_dir() and any(dst.iterdir())):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    try:
        shutil.copytree(src, staging, dirs_exist_ok=True)
        if dst.is_dir():
            dst.rmdir()  # empty, checked above
        staging.rename(dst)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return dst.is_dir() and any(dst.iterdir())  # another process won the race
    return True
