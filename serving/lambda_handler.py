"""AWS Lambda entry point: the same app behind Mangum (model loaded at import = init phase).

``API_GATEWAY_BASE_PATH`` strips a custom-domain base path (e.g. ``/risk``); API Gateway
stage names are handled by Mangum itself.
"""

import os

from mangum import Mangum

from serving.app import create_app

handler = Mangum(
    create_app(), lifespan="off", api_gateway_base_path=os.environ.get("API_GATEWAY_BASE_PATH", "/")
)
