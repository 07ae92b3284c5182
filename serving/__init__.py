"""Serving plane: a Litestar app scoring POS transactions with the champion bundle.

Entry points: ``uvicorn --factory serving.app:create_app`` (containers / K8s) and
``serving.lambda_handler.handler`` (AWS Lambda through Mangum). Importing this package does
nothing; each entry point calls ``prepare_numba_cache`` itself.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def prepare_numba_cache(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Point numba's on-disk kernel cache at a writable folder and seed it; returns the folder.

    numba's ``cache=True`` kernels need a writable folder. On Lambda only /tmp is writable,
    so when this package's folder is read-only and ``NUMBA_CACHE_DIR`` is unset it is set to
    ``<tmp>/numba-cache``. numba reads ``NUMBA_CACHE_DIR`` when it is imported, so an entry
    point calls this before importing anything that imports numba (``serving.app``).

    A fresh /tmp means compiling every kernel again (seconds, inside Lambda's 10 s init
    phase). So the images compile them at build time (``python -m serving.warm``) into a
    read-only seed folder named by ``NUMBA_CACHE_SEED``, and an empty cache folder is filled
    from it here; kernels compile lazily, so seeding before the first request is in time.
    The images also fix ``NUMBA_CPU_NAME`` (x86-64-v3, AVX2), so the cached machine code
    does not depend on the build host's CPU; without a seed, or on a mismatch, numba
    compiles as usual.
    """
    from serving.settings import numba_cache_dir, seed_numba_cache

    env = os.environ if environ is None else environ
    if not env.get("NUMBA_CACHE_DIR"):
        folder = numba_cache_dir()
        if folder:
            env["NUMBA_CACHE_DIR"] = folder
    cache, seed = env.get("NUMBA_CACHE_DIR"), env.get("NUMBA_CACHE_SEED")
    if cache and seed:
        seed_numba_cache(seed, cache)
    return cache or None
