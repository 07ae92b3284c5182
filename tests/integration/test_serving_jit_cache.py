"""The images' precompiled kernel cache: ``python -m serving.warm`` fills a seed folder, and
a fresh process with an empty NUMBA_CACHE_DIR and NUMBA_CACHE_SEED loads every kernel from it
(numba's own dispatcher statistics: cache hits, zero misses) instead of compiling.

Both processes fix NUMBA_CPU_NAME=x86-64-v3 as the images do; the build of the images
themselves cannot run here (no Docker engine), tests/unit/test_delivery_images.py checks
the Dockerfile wiring statically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json
from serving import prepare_numba_cache
prepare_numba_cache()
import numba
from serving.model_loader import load
from serving.settings import ServingSettings
from components.contracts.engine import kernels
from components.contracts import features

load(ServingSettings.from_env())
stats = {}
for mod in (kernels, features):
    for name in dir(mod):
        f = getattr(mod, name)
        if isinstance(f, numba.core.registry.CPUDispatcher):
            hits, misses = sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())
            if hits or misses:
                stats[name] = [hits, misses]
print(json.dumps(stats))
"""


def _avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _avx2(), reason="x86-64-v3 machine code needs AVX2")
def test_seeded_cache_loads_every_kernel_without_compiling(tmp_path):
    from tools.demo import build_demo_bundle

    bundle = build_demo_bundle(tmp_path / "bundle", rows=2000, n_estimators=12, iforest_trees=10)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MODEL_DIR": str(bundle.path),
        "NUMBA_CPU_NAME": "x86-64-v3",
    }
    env.pop("MODEL_URI", None)
    env.pop("NUMBA_CACHE_SEED", None)
    seed = tmp_path / "seed"
    warm = subprocess.run(
        [sys.executable, "-m", "serving.warm"],
        env={**env, "NUMBA_CACHE_DIR": str(seed)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "cached kernel files for CPU x86-64-v3" in warm.stdout

    cache = tmp_path / "tmp" / "numba"  # what /tmp/numba is in the image: absent at start
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, "NUMBA_CACHE_DIR": str(cache), "NUMBA_CACHE_SEED": str(seed)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    stats = json.loads(probe.stdout.strip().splitlines()[-1])
    # the single-row path, the batch kernel and the feature kernel were all reached...
    assert {"pair_row", "tree_batch", "top_positive_batch"} <= set(stats)
    assert "_features_batch" in stats
    # ...and every one came from the seed
    assert all(misses == 0 and hits >= 1 for hits, misses in stats.values()), stats
    assert any(cache.rglob("*.nbi"))


def test_warm_without_a_cache_folder_is_a_one_line_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MODEL_DIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "serving.warm"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "serving.warm: error: set NUMBA_CACHE_DIR to the folder to fill"
    proc = subprocess.run(
        [sys.executable, "-m", "serving.warm"],
        env={**env, "NUMBA_CACHE_DIR": str(tmp_path / "c"), "MODEL_DIR": str(tmp_path / "no")},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("serving.warm: error: bundle rejected:")
