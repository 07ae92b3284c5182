"""Evaluate's model loading: the model files' bytes (with their sha256) and the loaded models.

``ModelFiles`` reads each file once and records the digest of the exact bytes scored;
``load_booster`` / ``load_forest`` turn those bytes into models (pickle-free), refusing
models whose feature count differs from ``FEATURE_NAMES``; ``xgb_scorer`` scores a matrix with the serving engine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from components.contracts import features as F
from components.contracts import storage
from components.contracts.schemas import InputError
from components.contracts.storage import sha256_bytes


class ModelFiles:
    """Reads model files once and records the sha256 of the exact bytes that were scored.

    ``digests`` ({"xgb_model": {"xgb.ubj": sha256, ...}, "iforest_model": {...}}) goes into
    ``metrics.json`` (``inputs.model_digests``); ``register`` refuses a model whose files do
    not have these digests, so an evaluation is bound to the models it measured.
    """

    def __init__(self) -> None:
        self.digests: dict[str, dict[str, str]] = {}
        self._outputs: dict[str, storage.Output] = {}

    def _open(self, folder: str) -> storage.Output:
        # A published model folder: refused without its marker or with a modified file.
        if folder not in self._outputs:
            self._outputs[folder] = storage.open_output(folder)
        return self._outputs[folder]

    def read(self, role: str, folder: str, name: str) -> bytes:
        data = self._open(folder).read_bytes(name)  # checked against the marker's sha256
        self.digests.setdefault(role, {})[name] = sha256_bytes(data)
        return data

    def read_optional(self, role: str, folder: str, name: str) -> bytes | None:
        return self.read(role, folder, name) if self._open(folder).has(name) else None


def load_booster(uri: str, data: bytes | None = None):
    """An XGBoost booster from native UBJSON bytes (read from ``uri`` if not given)."""
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(storage.read_bytes(uri) if data is None else data))
    except xgboost.core.XGBoostError as exc:
        raise InputError(
            f"{uri}: not a readable XGBoost model ({str(exc).splitlines()[0]})"
        ) from exc
    names = booster.feature_names
    if names is not None and list(names) != list(F.FEATURE_NAMES):
        raise InputError(f"{uri}: model feature names differ from features.FEATURE_NAMES")
    if booster.num_features() != len(F.FEATURE_NAMES):
        raise InputError(
            f"{uri}: model expects {booster.num_features()} features, "
            f"FEATURE_NAMES has {len(F.FEATURE_NAMES)}"
        )
    return booster


def xgb_scorer(booster) -> Callable[[np.ndarray], np.ndarray]:
    """The booster's raw margins (float64) through the serving engine's tree kernels: the
    numbers the gate checks are produced by the code that serves (exact to XGBoost's own
    ``predict(output_margin=True)``, ``tests/unit/test_engine_parity.py``)."""
    from components.contracts.engine import XGBTrees

    trees = XGBTrees.from_booster(booster)
    return lambda X: trees.margins(X).astype(np.float64)


def load_forest(uri: str, data: bytes | None = None):
    """The forest from ``forest.npz`` bytes (read from ``uri`` if not given), pickle-free."""
    import zipfile

    from components.contracts.forest import ForestArrays, ForestFormatError

    try:
        forest = ForestArrays.from_npz_bytes(
            storage.read_bytes(uri) if data is None else data, source=uri
        )
    except ForestFormatError as exc:
        raise InputError(str(exc)) from exc
    except zipfile.BadZipFile as exc:  # a damaged .npz (zip) archive
        raise InputError(f"{uri}: not a readable .npz file ({exc})") from exc
    if forest.n_features != len(F.FEATURE_NAMES):
        raise InputError(
            f"{uri}: forest expects {forest.n_features} features, "
            f"FEATURE_NAMES has {len(F.FEATURE_NAMES)}"
        )
    return forest
