"""``import serving`` changes nothing; the entry points prepare numba's cache explicitly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_serving_leaves_the_environment_alone(tmp_path):
    """A read-only-looking setup (seed given, no cache dir) is not touched at import."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "k.nbi").write_bytes(b"x")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_SEED"] = str(seed)
    probe = "import os, serving; print(os.environ.get('NUMBA_CACHE_DIR'))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip() == "None"


def test_prepare_numba_cache_seeds_the_configured_folder(tmp_path):
    from serving import prepare_numba_cache

    seed = tmp_path / "seed"
    (seed / "sub").mkdir(parents=True)
    (seed / "sub" / "k.nbi").write_bytes(b"kernel")
    cache = tmp_path / "tmp" / "numba"
    env = {"NUMBA_CACHE_DIR": str(cache), "NUMBA_CACHE_SEED": str(seed)}
    assert prepare_numba_cache(env) == str(cache)
    assert (cache / "sub" / "k.nbi").read_bytes() == b"kernel"
    assert env == {"NUMBA_CACHE_DIR": str(cache), "NUMBA_CACHE_SEED": str(seed)}


def test_prepare_numba_cache_moves_to_tmp_when_the_package_is_read_only(monkeypatch, tmp_path):
    import serving.settings as settings_mod
    from serving import prepare_numba_cache

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(settings_mod.os, "access", lambda *a, **k: False)
    env: dict[str, str] = {}
    folder = prepare_numba_cache(env)
    assert folder is not None and folder.endswith("numba-cache")
    assert env == {"NUMBA_CACHE_DIR": folder}
