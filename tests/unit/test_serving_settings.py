"""Serving settings from the environment, and the numba cache folder choice."""

from __future__ import annotations

import os

import pytest

from serving import settings as settings_mod
from serving.settings import ServingSettings


def test_from_env_reads_every_knob(monkeypatch):
    for key, value in {
        "MODEL_DIR": "/m",
        "MODEL_URI": "models:/x@champion",
        "API_KEY": "s3cr3t-value",
        "METRICS_REQUIRE_KEY": "true",
        "METRICS_MODE": "EMF",
        "MAX_BATCH": "10",
        "MAX_BODY_BYTES": "999",
        "TOP_REASONS": "5",
        "OPENAPI": "false",
    }.items():
        monkeypatch.setenv(key, value)
    s = ServingSettings.from_env()
    assert (s.model_dir, s.model_uri, s.api_key) == ("/m", "models:/x@champion", "s3cr3t-value")
    assert s.metrics_require_key and s.metrics_mode == "emf" and not s.openapi
    assert (s.max_batch, s.max_body_bytes, s.top_reasons) == (10, 999, 5)
    assert "s3cr3t-value" not in repr(s)  # the key never shows up in logs


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("METRICS_MODE", "statsd", "METRICS_MODE"),
        ("MAX_BATCH", "many", "MAX_BATCH"),
        ("MAX_BATCH", "0", "MAX_BATCH"),
        ("METRICS_REQUIRE_KEY", "perhaps", "METRICS_REQUIRE_KEY"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, key, value, message):
    monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        ServingSettings.from_env()


def test_numba_cache_moves_to_tmp_only_when_package_is_read_only(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    assert settings_mod.numba_cache_dir() is None
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # e.g. Lambda's /var/task
    assert settings_mod.numba_cache_dir().endswith("numba-cache")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/elsewhere")
    assert settings_mod.numba_cache_dir() is None


def test_seed_numba_cache_fills_only_an_empty_cache(tmp_path):
    from serving.settings import seed_numba_cache

    seed = tmp_path / "seed"
    (seed / "app" / "serving").mkdir(parents=True)
    (seed / "app" / "serving" / "trees.k-1.py311.nbi").write_bytes(b"index")
    (seed / "app" / "serving" / "trees.k-1.py311.1.nbc").write_bytes(b"code")

    missing = tmp_path / "tmp" / "numba"
    assert seed_numba_cache(str(seed), str(missing))
    assert (missing / "app" / "serving" / "trees.k-1.py311.1.nbc").read_bytes() == b"code"
    assert [p.name for p in missing.parent.iterdir()] == ["numba"]  # no staging leftovers

    empty = tmp_path / "empty"
    empty.mkdir()
    assert seed_numba_cache(str(seed), str(empty))
    assert (empty / "app" / "serving" / "trees.k-1.py311.nbi").is_file()

    warm = tmp_path / "warm"
    (warm / "own").mkdir(parents=True)
    assert not seed_numba_cache(str(seed), str(warm))  # a warm cache keeps what it has
    assert [p.name for p in warm.iterdir()] == ["own"]

    assert not seed_numba_cache(str(tmp_path / "no-seed"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
