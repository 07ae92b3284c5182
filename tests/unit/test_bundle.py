"""Serving bundle: atomic assembly, sha256 verification, version checks, no stray files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.contracts import bundle as B
from components.contracts import features as F
from components.contracts import storage
from components.contracts.blend import BlendParams, Thresholds


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """Tiny real inputs: an XGBoost booster, a ForestArrays npz and a profile table."""
    import xgboost
    from sklearn.ensemble import IsolationForest

    from components.contracts.forest import ForestArrays

    root = tmp_path_factory.mktemp("bundle-inputs")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, len(F.FEATURE_NAMES)))
    y = X[:, 0] > 1.0
    dm = xgboost.DMatrix(X, label=y, feature_names=list(F.FEATURE_NAMES))
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, dm, 5)
    booster.save_model(str(root / "xgb.ubj"))
    forest = IsolationForest(n_estimators=10, max_samples=64, random_state=0).fit(X)
    ForestArrays.from_sklearn(forest).save(root / "forest.npz")
    state = F.ProfileState()
    raw = np.zeros((3, len(F.RAW_INPUTS)))
    raw[:, 2] = 5
    state.advance(raw, ["c1", "c2", "c1"], ["s1", "s1", "s1"])
    pq.write_table(state.to_table(), root / "profiles.parquet")
    return {
        "xgb_model": root / "xgb.ubj",
        "forest": root / "forest.npz",
        "profiles": root / "profiles.parquet",
        "X": X,
    }


def _params() -> BlendParams:
    return BlendParams(
        xgb_weight=1.0,
        iforest_weight=0.3,
        intercept=-2.0,
        iforest_center=0.45,
        iforest_scale=0.03,
        thresholds=Thresholds(high=70.0, medium=10.0),
        reference_histogram=tuple([1 / 20] * 20),
    )


def _write(model_files, out: Path, **overrides) -> B.Bundle:
    kwargs = dict(
        xgb_model=model_files["xgb_model"],
        forest=model_files["forest"],
        profiles=model_files["profiles"],
        blend=_params(),
        feature_names=F.FEATURE_NAMES,
        feature_version=F.FEATURE_VERSION,
        metrics={"blend_pr_auc": 0.9},
        model_name="m",
    )
    kwargs.update(overrides)
    return B.write_bundle(out, **kwargs)


def test_write_and_load_round_trip(model_files, tmp_path):
    out = tmp_path / "bundle"
    written = _write(model_files, out)
    loaded = B.load_bundle(out)
    assert loaded.sha256 == written.sha256 == storage.sha256_file(loaded.root / "manifest.json")
    assert loaded.root.parent == out and loaded.root.name.startswith("v-")  # published layout
    m = loaded.manifest
    assert m["format"] == "cashier-integrity-bundle" and m["bundle_version"] == 1
    assert set(m["files"]) == set(B.REQUIRED_FILES)
    assert m["files"]["xgb.ubj"] == storage.sha256_file(model_files["xgb_model"])
    assert loaded.blend == _params()
    assert loaded.feature_names == list(F.FEATURE_NAMES)
    assert loaded.metrics == {"blend_pr_auc": 0.9}
    assert loaded.model_version is None
    # The models load from the bundle without any pickle and score like the inputs.
    X = model_files["X"][:5]
    forest = loaded.load_forest()
    assert forest.score_samples(X).shape == (5,)
    import xgboost

    margins = loaded.load_xgb().predict(
        xgboost.DMatrix(X, feature_names=list(F.FEATURE_NAMES)), output_margin=True
    )
    assert np.all(np.isfinite(margins))
    assert loaded.load_profiles().num_rows == 4  # 2 cashiers, 1 store, global
    # No staging leftovers next to the target.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_rewrite_replaces_atomically(model_files, tmp_path):
    out = tmp_path / "bundle"
    first = _write(model_files, out)
    second = _write(model_files, out, metrics={"blend_pr_auc": 0.95})
    assert first.sha256 != second.sha256
    assert B.load_bundle(out).metrics == {"blend_pr_auc": 0.95}


def test_failed_write_leaves_no_output(model_files, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(B.BundleError, match="missing input"):
        _write(model_files, out, profiles=tmp_path / "nope.parquet")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_blend_without_thresholds_is_refused(model_files, tmp_path):
    with pytest.raises(B.BundleError, match="thresholds"):
        _write(model_files, tmp_path / "b", blend=_params().with_(thresholds=None))


@pytest.fixture
def bundle_dir(model_files, tmp_path) -> Path:
    """The published bundle's version folder (where its files are)."""
    return _write(model_files, tmp_path / "bundle").root


@pytest.mark.parametrize("name", B.REQUIRED_FILES)
def test_tampered_file_is_named(bundle_dir, name):
    path = bundle_dir / name
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(B.BundleError, match=rf"{name}: sha256"):
        B.load_bundle(bundle_dir)


def test_missing_file_is_named(bundle_dir):
    (bundle_dir / "forest.npz").unlink()
    with pytest.raises(B.BundleError, match=r"forest.npz: listed in manifest.json but missing"):
        B.load_bundle(bundle_dir)


@pytest.mark.parametrize("extra", ["model.pkl", "xgb.joblib", "sub/forest2.npz"])
def test_unlisted_extra_file_is_refused(bundle_dir, extra):
    path = bundle_dir / extra
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"\x80\x04")
    with pytest.raises(B.BundleError, match="not listed"):
        B.load_bundle(bundle_dir)


def _edit_manifest(bundle_dir: Path, **changes) -> None:
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other"}, "format"),
        ({"bundle_version": 2}, "bundle_version"),
        ({"schema_version": 999}, "schema_version"),
        ({"feature_version": 999}, "feature_version"),
        ({"files": {"xgb.ubj": "0" * 64}}, "not listed"),
        ({"files": {**{n: "0" for n in B.REQUIRED_FILES}, "../escape": "0"}}, "escapes"),
    ],
)
def test_manifest_checks(bundle_dir, changes, message):
    _edit_manifest(bundle_dir, **changes)
    with pytest.raises(B.BundleError, match=message):
        B.load_bundle(bundle_dir)


def test_feature_list_must_match_the_code(model_files, tmp_path):
    names = list(F.FEATURE_NAMES)[::-1]
    with pytest.raises(B.BundleError, match="feature_names differ"):
        _write(model_files, tmp_path / "b", feature_names=names)
    assert not (tmp_path / "b").exists()  # verified before publishing
    _write(model_files, tmp_path / "b", feature_names=names, check_versions=False)
    with pytest.raises(B.BundleError, match="feature_names differ"):
        B.load_bundle(tmp_path / "b")
    assert B.load_bundle(tmp_path / "b", check_versions=False).feature_names == names


def test_registry_sidecar_gives_the_version_without_changing_identity(bundle_dir):
    before = B.load_bundle(bundle_dir)
    B.write_registry_sidecar(bundle_dir, model_name="m", model_version="7", run_id="r")
    after = B.load_bundle(bundle_dir)
    assert after.model_version == "7" and after.registry["run_id"] == "r"
    assert after.sha256 == before.sha256
    assert after.manifest["files"]["registry.json"] == storage.sha256_file(
        bundle_dir / "registry.json"
    )
    assert (bundle_dir / "registry.json").stat().st_mode & 0o044 == 0o044  # world-readable


def test_registry_json_is_covered_by_the_manifest(bundle_dir):
    """Issue 11 item 10: an unlisted or edited registry.json could claim any model version."""
    B.write_registry_sidecar(bundle_dir, model_name="m", model_version="7")
    sidecar = bundle_dir / "registry.json"
    genuine = sidecar.read_bytes()
    sidecar.write_bytes(genuine.replace(b'"7"', b'"99"'))
    with pytest.raises(B.BundleError, match=r"registry.json: sha256"):
        B.load_bundle(bundle_dir)
    sidecar.write_bytes(genuine)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    del manifest["files"]["registry.json"]
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(B.BundleError, match=r"registry.json: file not listed"):
        B.load_bundle(bundle_dir)


def test_registry_json_names_the_version_over_the_build_time_claim(model_files, tmp_path):
    root = _write(model_files, tmp_path / "b", model_version="3").root
    assert B.load_bundle(root).model_version == "3"
    B.write_registry_sidecar(root, model_name="m", model_version="4")
    assert B.load_bundle(root).model_version == "4"


def test_published_bundle_rewrite_keeps_the_old_until_the_new_is_complete(model_files, tmp_path):
    out = tmp_path / "bundle"
    first = _write(model_files, out)
    with pytest.raises(B.BundleError, match="missing input"):
        _write(model_files, out, profiles=tmp_path / "nope.parquet")
    assert B.load_bundle(out).sha256 == first.sha256
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", first.root.name]


def test_corrupt_json_is_named(bundle_dir):
    (bundle_dir / "manifest.json").write_text("{not json")
    with pytest.raises(B.BundleError, match=r"manifest.json: not valid JSON"):
        B.load_bundle(bundle_dir)


def test_copy_verified_copies_the_listed_files_and_rewrites_the_sidecar(bundle_dir, tmp_path):
    """Register's publish and delivery's bake: the copy is the same bundle, new version."""
    B.write_registry_sidecar(bundle_dir, model_name="m", model_version="1", run_id="r")
    source = B.load_bundle(bundle_dir)
    dest = tmp_path / "copy"
    dest.mkdir()
    copy = B.copy_verified(source, dest, model_name="m", model_version="2", alias="champion")
    assert copy.sha256 == source.sha256  # same identity
    assert (copy.model_version, copy.registry["alias"]) == ("2", "champion")
    assert sorted(p.name for p in dest.iterdir()) == sorted([*source.manifest["files"], B.MANIFEST])


def test_copy_verified_refuses_a_source_changed_after_verification(bundle_dir, tmp_path):
    source = B.load_bundle(bundle_dir)
    (bundle_dir / "forest.npz").write_bytes(b"tampered")
    with pytest.raises(B.BundleError, match=r"forest\.npz: sha256"):
        B.copy_verified(source, tmp_path, model_name="m", model_version="1")
