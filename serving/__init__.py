"""Serving plane: a Litestar app scoring POS transactions with the champion bundle.

Entry points: ``uvicorn --factory serving.app:create_app`` (containers / K8s) and
``serving.lambda_handler.handler`` (AWS Lambda through Mangum).

numba's on-disk cache (``cache=True`` kernels) needs a writable folder. On Lambda only
/tmp is writable, so when this package's folder is read-only and NUMBA_CACHE_DIR is unset,
it is pointed at ``<tmp>/numba-cache`` here: this must happen before numba is imported,
and importing ``serving`` is the first thing every entry point does.

A fresh /tmp means compiling every kernel again (seconds, inside Lambda's 10 s init
phase). So the images compile them at build time (``python -m serving.warm``) into a
read-only seed folder named by ``NUMBA_CACHE_SEED``, and here an empty cache folder is
filled from it. The images also fix ``NUMBA_CPU_NAME`` (x86-64-v3, AVX2), so the cached
machine code does not depend on the build host's CPU and every x86-64 host it runs on
accepts it; without a seed, or on a mismatch, numba compiles as usual.
"""

import os as _os

if not _os.environ.get("NUMBA_CACHE_DIR"):
    from serving.settings import numba_cache_dir as _numba_cache_dir

    _dir = _numba_cache_dir()
    if _dir:
        _os.environ["NUMBA_CACHE_DIR"] = _dir

if _os.environ.get("NUMBA_CACHE_SEED") and _os.environ.get("NUMBA_CACHE_DIR"):
    from serving.settings import seed_numba_cache as _seed_numba_cache

    _seed_numba_cache(_os.environ["NUMBA_CACHE_SEED"], _os.environ["NUMBA_CACHE_DIR"])
