"""AWS Lambda entry point: the same app behind Mangum (model loaded at import = init phase).

``API_GATEWAY_BASE_PATH`` strips a custom-domain base path (e.g. ``/risk``); API Gateway
stage names are handled by Mangum itself. The numba cache is prepared before ``serving.app``
(and with it numba) is imported: only /tmp is writable on Lambda.
"""

import os

from serving import prepare_numba_cache

prepare_numba_cache()

from mangum import Mangum  # noqa: E402

from serving.app import create_app  # noqa: E402

handler = Mangum(
    create_app(), lifespan="off", api_gateway_base_path=os.environ.get("API_GATEWAY_BASE_PATH", "/")
)
