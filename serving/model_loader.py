"""Load the serving model once per process: a baked bundle folder or the MLflow registry.

* ``MODEL_DIR``: a bundle folder (what the Lambda / container image carries, see
  ``python -m tools.delivery.bake``).
* ``MODEL_URI``: ``models:/<name>@<alias>`` (or ``models:/<name>/<version>``, or any MLflow
  artifact URI): downloaded once at start, then the bundle inside is used.

Either way ``bundle.load_bundle`` verifies every file against the manifest's sha256 and the
schema/feature versions; a mismatch raises ``BundleError`` and the app refuses to start.
Nothing is unpickled: the booster is read from native UBJSON and dumped to JSON for the
tree compiler, the forest from ``forest.npz`` with ``allow_pickle=False``.

``get_model`` caches per process (module level, under a lock), so the Lambda shim loads at
import (the init phase) and never in the ASGI lifespan, which Mangum would re-run per
invocation. Loading ends with a self-test that scores a synthetic transaction on the single
and batch paths: this compiles (or loads from numba's cache) every kernel before the first
request, and /readyz reports its outcome.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.contracts import bundle as bundle_mod
from components.contracts import features as feats
from components.contracts import storage
from components.contracts.bundle import Bundle, BundleError
from components.contracts.engine import IForestTrees, XGBTrees
from serving.scorer import Models, Scorer
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """No usable model: configuration missing, download failed or bundle rejected."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified bundle, its compiled models and where it came from."""

    bundle: Bundle
    scorer: Scorer
    name: str
    version: str
    alias: str | None
    run_id: str | None
    trained_at: str | None
    source: str
    load_seconds: float
    self_test: dict[str, Any] = field(default_factory=dict)


def find_bundle_dir(root: Path) -> Path:
    """The folder under ``root`` whose manifest.json is a serving bundle's."""
    candidates = [root / bundle_mod.MANIFEST, *sorted(root.rglob(bundle_mod.MANIFEST))]
    for manifest in candidates:
        if not manifest.is_file():
            continue
        try:
            if json.loads(manifest.read_bytes()).get("format") == bundle_mod.BUNDLE_FORMAT:
                return manifest.parent
        except (ValueError, OSError, AttributeError):
            continue
    raise ModelLoadError(f"{root}: no serving bundle (manifest.json) found")


def download_registry_bundle(uri: str, dst: str | Path) -> tuple[Path, dict[str, Any]]:
    """Download ``uri`` with MLflow and return the bundle folder inside plus registry facts.

    MLflow's HTTP retries are bounded by ``SERVICE_TIMEOUT_S`` (``tracking.bound_retries``),
    so an unreachable tracking server stops the start within about that many seconds instead
    of MLflow's default of ~250 s.
    """
    import mlflow

    from components.contracts.settings import Settings
    from components.contracts.tracking import bound_retries

    cfg = Settings.from_env().mlflow
    bound_retries(cfg.service_timeout_s)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    facts: dict[str, Any] = {}
    if uri.startswith("models:/"):
        ref = uri.removeprefix("models:/")
        client = mlflow.MlflowClient()
        try:
            if "@" in ref:
                name, alias = ref.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
                facts["alias"] = alias
            else:
                name, version = ref.rsplit("/", 1)
                mv = client.get_model_version(name, version)
        except Exception as exc:  # MlflowException and friends: name the URI
            raise ModelLoadError(f"{uri}: cannot resolve in the registry ({exc})") from exc
        facts |= {
            "model_name": mv.name,
            "model_version": str(mv.version),
            "run_id": mv.run_id,
            "trained_at": _iso_ms(mv.creation_timestamp),
        }
    Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    except Exception as exc:
        raise ModelLoadError(f"{uri}: download failed ({exc})") from exc
    return find_bundle_dir(Path(local)), facts


def _iso_ms(ms: int | None) -> str | None:
    if not ms:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def load_models(bundle: Bundle) -> Models:
    """Compile a verified bundle's models into flat arrays and load the profile index."""
    import xgboost

    from components.contracts.forest import ForestArrays

    booster = xgboost.Booster(model_file=str(bundle.xgb_path))
    xgb = XGBTrees.from_booster(booster)
    forest = IForestTrees.from_forest(ForestArrays.load(bundle.forest_path))
    profiles = feats.ProfileIndex.from_table(
        storage.read_table(str(bundle.profiles_path), feats.PROFILE_SCHEMA, require_marker=False)
    )
    return Models(
        xgb=xgb,
        forest=forest,
        profiles=profiles,
        blend=bundle.blend,
        feature_names=tuple(bundle.feature_names),
    )


def synthetic_request(scorer: Scorer) -> dict[str, Any]:
    """A plausible transaction by a known cashier (or an unknown one with no profiles)."""
    cashiers = sorted(scorer.models.profiles.cashiers)
    return {
        "transaction_id": "self-test",
        "cashier_id": cashiers[0] if cashiers else "self-test",
        "item_count": 12,
        "total_amount": 150.0,
        "void_count": 0,
        "no_sale_count": 0,
        "weight_variance": 0.1,
        "timestamp": "2026-01-05T12:00:00",
    }


def self_test(scorer: Scorer) -> dict[str, Any]:
    """Score a synthetic request on both paths; raise unless sane and identical."""
    request = synthetic_request(scorer)
    one = scorer.score_one(request)
    many = scorer.score_many([request, request])
    if not 0.0 <= one.risk_score <= 100.0:
        raise ModelLoadError(f"self-test: risk score {one.risk_score} outside 0-100")
    if any(m.risk_score != one.risk_score for m in many):
        raise ModelLoadError(
            f"self-test: single-row score {one.risk_score} != batch {many[0].risk_score}"
        )
    return {"risk_score": one.risk_score, "risk_level": one.risk_level}


def load(settings: ServingSettings) -> LoadedModel:
    """Resolve, verify, compile and self-test the model named by ``settings``."""
    start = time.perf_counter()
    facts: dict[str, Any] = {}
    if settings.model_dir:
        folder, source = Path(settings.model_dir), settings.model_dir
    elif settings.model_uri:
        dst = settings.download_dir or tempfile.mkdtemp(prefix="pos-risk-model-")
        folder, facts = download_registry_bundle(settings.model_uri, dst)
        source = settings.model_uri
    else:
        raise ModelLoadError("no model configured: set MODEL_DIR (bundle folder) or MODEL_URI")
    try:
        bundle = bundle_mod.load_bundle(folder)
    except BundleError as exc:
        raise ModelLoadError(f"bundle rejected: {exc}") from exc
    models = load_models(bundle)
    scorer = Scorer(models, top_reasons=settings.top_reasons)
    report = self_test(scorer)
    registry = bundle.registry or {}
    loaded = LoadedModel(
        bundle=bundle,
        scorer=scorer,
        name=str(facts.get("model_name") or bundle.model_name or "unregistered"),
        version=str(facts.get("model_version") or bundle.model_version or bundle.sha256[:12]),
        alias=facts.get("alias") or registry.get("alias"),
        run_id=facts.get("run_id") or registry.get("run_id"),
        trained_at=bundle.manifest.get("created_at") or facts.get("trained_at"),
        source=source,
        load_seconds=time.perf_counter() - start,
        self_test=report,
    )
    log.info(
        "model %s version %s loaded from %s in %.2fs (bundle sha256 %s)",
        loaded.name,
        loaded.version,
        source,
        loaded.load_seconds,
        bundle.sha256[:12],
    )
    return loaded


_lock = threading.Lock()
_cache: dict[tuple[str | None, str | None, int], LoadedModel] = {}


def get_model(settings: ServingSettings) -> LoadedModel:
    """The process-wide model for ``settings`` (loaded on first call, then cached)."""
    key = (settings.model_dir, settings.model_uri, settings.top_reasons)
    with _lock:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = _cache[key] = load(settings)
        return loaded
