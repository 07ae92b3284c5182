"""Serving plane: a Litestar app scoring POS transactions with the champion bundle.

Entry points: ``uvicorn --factory serving.app:create_app`` (containers / K8s) and
``serving.lambda_handler.handler`` (AWS Lambda through Mangum).

numba's on-disk cache (``cache=True`` kernels) needs a writable folder. On Lambda only
/tmp is writable, so when this package's folder is read-only and NUMBA_CACHE_DIR is unset,
it is pointed at ``<tmp>/numba-cache`` here: this must happen before numba is imported,
and importing ``serving`` is the first thing every entry point does.
"""

import os as _os

if not _os.environ.get("NUMBA_CACHE_DIR"):
    from serving.settings import numba_cache_dir as _numba_cache_dir

    _dir = _numba_cache_dir()
    if _dir:
        _os.environ["NUMBA_CACHE_DIR"] = _dir
