"""The serving bundle: one folder with everything serving needs, verified on load.

Layout (all files listed in ``manifest.json`` with their sha256)::

    manifest.json     {"format", "bundle_version", "schema_version", "feature_version",
                       "created_at", "model_name", "model_version", "metrics", "files"}
    xgb.ubj           XGBoost booster, native UBJSON
    forest.npz        isolation forest as plain arrays (components.contracts.forest)
    profiles.parquet  per-cashier / per-store / global profile table (features.PROFILE_SCHEMA)
    blend.json        blend weights, calibration, thresholds, reference score histogram
    features.json     {"feature_names": [...], "feature_version": N}

``registry.json`` (the MLflow name/version, written by ``register`` once the version is
known) is listed in the manifest too, with its sha256, so everything a bundle claims is
verified; ``manifest.json`` itself is the only unlisted file, and anything else unlisted is
refused. The bundle's identity (``Bundle.sha256``) is the sha256 of the manifest without
its ``registry.json`` entry, so the same content registered twice keeps one identity.

A published bundle (``storage.publish``: ``<dir>/_SUCCESS`` + ``<dir>/v-<commit>/``) is
opened through its marker; a plain bundle folder (e.g. downloaded from MLflow) directly.

``load_bundle`` verifies every hash, the format and the schema/feature versions and raises
``BundleError`` naming the file. Nothing here unpickles: the booster is native UBJSON, the
forest is read with ``allow_pickle=False``, tables are Parquet, metadata is JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.contracts import storage
from components.contracts.blend import BlendError, BlendParams
from components.contracts.schemas import SCHEMA_VERSION, InputError

if TYPE_CHECKING:
    import xgboost

    from components.contracts.forest import ForestArrays

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "cashier-integrity-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
REGISTRY_SIDECAR = "registry.json"
XGB_FILE = "xgb.ubj"
FOREST_FILE = "forest.npz"
PROFILES_FILE = "profiles.parquet"
BLEND_FILE = "blend.json"
FEATURES_FILE = "features.json"
REQUIRED_FILES = (XGB_FILE, FOREST_FILE, PROFILES_FILE, BLEND_FILE, FEATURES_FILE)
UNLISTED_ALLOWED = (MANIFEST,)


class BundleError(InputError):
    """A bundle is incomplete, tampered with or incompatible; the message names the file."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder: paths plus the parsed JSON files."""

    root: Path
    manifest: dict[str, Any]
    blend: BlendParams
    features: dict[str, Any]
    registry: dict[str, Any] | None
    sha256: str
    """sha256 of the manifest without its ``registry.json`` entry: the content's identity."""

    @property
    def xgb_path(self) -> Path:
        return self.root / XGB_FILE

    @property
    def forest_path(self) -> Path:
        return self.root / FOREST_FILE

    @property
    def profiles_path(self) -> Path:
        return self.root / PROFILES_FILE

    @property
    def feature_names(self) -> list[str]:
        return list(self.features["feature_names"])

    @property
    def model_name(self) -> str | None:
        return (self.registry or {}).get("model_name") or self.manifest.get("model_name")

    @property
    def model_version(self) -> str | None:
        """Registry version: from ``registry.json`` (listed, so verified) once the registry
        assigned one, else the manifest's build-time ``model_version``."""
        version = (self.registry or {}).get("model_version") or self.manifest.get("model_version")
        return str(version) if version not in (None, "") else None

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics") or {})

    def load_xgb(self) -> xgboost.Booster:
        """The booster, from native UBJSON (single-threaded: serving scores one row at a time)."""
        import xgboost

        booster = xgboost.Booster(model_file=str(self.xgb_path))
        booster.set_param({"nthread": 1})
        return booster

    def load_forest(self) -> ForestArrays:
        from components.contracts.forest import ForestArrays

        return ForestArrays.load(self.forest_path)

    def load_profiles(self):
        """The profile table (``pyarrow.Table``)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.profiles_path)


# ---------------------------------------------------------------- writing


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def build_bundle_files(
    folder: str | Path,
    *,
    xgb_model: str | Path,
    forest: str | Path,
    profiles: str | Path,
    blend: BlendParams | Mapping[str, Any],
    feature_names: Sequence[str],
    feature_version: int,
    metrics: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    created_at: str | None = None,
) -> Path:
    """Write the bundle files and manifest into an existing (empty) folder; no atomicity.

    ``write_bundle`` wraps this in ``storage.staged_dir``. Inputs are validated: the blend must
    parse and carry thresholds, and the feature list must be non-empty.
    """
    folder = Path(folder)
    params = blend if isinstance(blend, BlendParams) else BlendParams.from_dict(blend)
    if params.thresholds is None:
        raise BundleError(f"{BLEND_FILE}: blend parameters carry no risk thresholds")
    if not feature_names:
        raise BundleError(f"{FEATURES_FILE}: empty feature list")
    for name, src in ((XGB_FILE, xgb_model), (FOREST_FILE, forest), (PROFILES_FILE, profiles)):
        src = Path(src)
        if not src.is_file():
            raise BundleError(f"{src}: missing input for {name}")
        shutil.copyfile(src, folder / name)
    (folder / BLEND_FILE).write_bytes(_dump(params.to_dict()))
    (folder / FEATURES_FILE).write_bytes(
        _dump({"feature_names": list(feature_names), "feature_version": int(feature_version)})
    )
    manifest = {
        "format": BUNDLE_FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "schema_version": SCHEMA_VERSION,
        "feature_version": int(feature_version),
        "created_at": created_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model_name": model_name,
        "model_version": model_version,
        "metrics": dict(metrics or {}),
        "files": {name: storage.sha256_file(folder / name) for name in REQUIRED_FILES},
    }
    (folder / MANIFEST).write_bytes(_dump(manifest))
    return folder


def write_bundle(out_dir: str | Path, *, check_versions: bool = True, **kwargs: Any) -> Bundle:
    """Assemble the serving bundle at ``out_dir`` atomically and return it verified.

    The bundle is verified with ``load_bundle`` before it is published, so a bundle that
    would not load is never written. ``out_dir`` must be a local folder (``register``
    uploads elsewhere if needed). Other keyword arguments are those of ``build_bundle_files``.
    """
    with storage.staged_dir(str(out_dir), stage="bundle") as tmp:
        build_bundle_files(tmp, **kwargs)
        load_bundle(tmp, check_versions=check_versions)
    return load_bundle(out_dir, check_versions=check_versions)


def write_registry_sidecar(
    bundle_dir: str | Path,
    *,
    model_name: str,
    model_version: str,
    run_id: str | None = None,
    alias: str | None = None,
) -> Path:
    """Write ``registry.json`` (MLflow name/version) into a bundle and list it in the manifest.

    The manifest gains ``files["registry.json"]`` (its sha256), so the version a bundle
    claims is verified like every other file; the bundle's identity does not change.
    """
    folder = Path(bundle_dir)
    data = _dump(
        {
            "model_name": model_name,
            "model_version": str(model_version),
            "run_id": run_id,
            "alias": alias,
        }
    )
    manifest = _read_json(folder / MANIFEST)
    manifest["files"] = {**manifest["files"], REGISTRY_SIDECAR: storage.sha256_bytes(data)}
    for name, content in ((REGISTRY_SIDECAR, data), (MANIFEST, _dump(manifest))):
        storage.write_bytes(content, str(folder / name))  # atomic; mode from the umask
    return folder / REGISTRY_SIDECAR


def copy_verified(source: Bundle, dest: str | Path, **sidecar: str | None) -> Bundle:
    """Copy a verified bundle into ``dest`` with its ``registry.json``; verify the copy.

    Exactly the manifest-listed files and the manifest are copied, then the registry sidecar
    is written with ``sidecar`` (the keywords of ``write_registry_sidecar``), so the copy
    serves the bytes that were verified. ``dest`` is a staged folder (register's publish,
    delivery's bake): a copy that does not verify raises ``BundleError`` before anything is
    published.
    """
    folder = Path(dest)
    for rel in source.manifest["files"]:
        if rel == REGISTRY_SIDECAR:
            continue  # rewritten below
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.root / rel, folder / rel)
    shutil.copyfile(source.root / MANIFEST, folder / MANIFEST)
    write_registry_sidecar(folder, **sidecar)
    return load_bundle(folder)


def content_sha256(manifest: Mapping[str, Any]) -> str:
    """The bundle's identity: sha256 of the manifest as built, i.e. without ``registry.json``."""
    files = {k: v for k, v in manifest["files"].items() if k != REGISTRY_SIDECAR}
    return storage.sha256_bytes(_dump({**manifest, "files": files}))


# ---------------------------------------------------------------- loading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc


def load_bundle(
    bundle_dir: str | Path,
    *,
    check_versions: bool = True,
) -> Bundle:
    """Verify and open a bundle folder.

    Checks: manifest format and ``bundle_version``; ``schema_version`` and
    ``feature_version`` equal to the running code's (``check_versions``); every required file
    listed; every listed file present with the listed sha256; no unlisted file except
    ``manifest.json`` (``registry.json`` included: it must be listed, and then names the
    ``model_version``); blend parameters with thresholds; the feature list equal to ``features.FEATURE_NAMES``.
    ``bundle_dir`` may be a published output (``_SUCCESS`` marker): its committed version
    is opened.

    Raises:
        BundleError: Naming the offending file.
    """
    root = Path(bundle_dir).resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder does not exist")
    if (root / storage.SUCCESS_MARKER).is_file():
        try:
            root = Path(storage.open_output(str(root)).path())
        except storage.StorageError as exc:
            raise BundleError(str(exc)) from exc
    manifest_path = root / MANIFEST
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: not a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{manifest_path}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT!r}"
        )
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise BundleError(
            f"{manifest_path}: bundle_version {manifest.get('bundle_version')!r} not supported "
            f"(expected {BUNDLE_VERSION})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{manifest_path}: no 'files' listing")
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{root / name}: required file not listed in {MANIFEST}")
    for rel in files:
        if root not in (root / rel).resolve().parents:
            raise BundleError(f"{manifest_path}: listed path {rel!r} escapes the bundle")
    for rel, expected in files.items():
        path = (root / rel).resolve()
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        actual = storage.sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{path}: sha256 {actual[:12]}... does not match manifest {str(expected)[:12]}..."
            )
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in files and rel not in UNLISTED_ALLOWED:
            raise BundleError(f"{path}: file not listed in {MANIFEST} (refusing unverified files)")

    features = _read_json(root / FEATURES_FILE)
    if not isinstance(features, dict) or not features.get("feature_names"):
        raise BundleError(f"{root / FEATURES_FILE}: no feature_names")
    if features.get("feature_version") != manifest.get("feature_version"):
        raise BundleError(
            f"{root / FEATURES_FILE}: feature_version {features.get('feature_version')!r} "
            f"differs from manifest {manifest.get('feature_version')!r}"
        )
    if check_versions:
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(
                f"{manifest_path}: schema_version {manifest.get('schema_version')!r} "
                f"!= this code's {SCHEMA_VERSION}"
            )
        from components.contracts import features as feats

        if manifest.get("feature_version") != feats.FEATURE_VERSION:
            raise BundleError(
                f"{manifest_path}: feature_version {manifest.get('feature_version')!r} "
                f"!= this code's {feats.FEATURE_VERSION}"
            )
        if list(features["feature_names"]) != list(feats.FEATURE_NAMES):
            raise BundleError(
                f"{root / FEATURES_FILE}: feature_names differ from this code's FEATURE_NAMES"
            )
    try:
        params = BlendParams.from_dict(_read_json(root / BLEND_FILE))
    except BlendError as exc:
        raise BundleError(f"{root / BLEND_FILE}: {exc}") from exc
    if params.thresholds is None:
        raise BundleError(f"{root / BLEND_FILE}: no risk thresholds")
    registry = None
    if REGISTRY_SIDECAR in files:
        registry = _read_json(root / REGISTRY_SIDECAR)
        if not isinstance(registry, dict) or not registry.get("model_version"):
            raise BundleError(f"{root / REGISTRY_SIDECAR}: not a JSON object with model_version")
    return Bundle(
        root=root,
        manifest=manifest,
        blend=params,
        features=features,
        registry=registry,
        sha256=content_sha256(manifest),
    )
