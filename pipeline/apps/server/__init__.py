"""``rxllm serve``: the pipeline as an OpenAI-compatible processing layer over HTTP.

Mount the routes into your own Starlette/FastAPI app with :func:`routes`, or
run :func:`create_app` as it is.
"""

from pipeline.apps.server.gateway import Gateway
from pipeline.apps.server.http_api import create_app, routes
from pipeline.apps.server.server_settings import ServerSettings

__all__ = ["Gateway", "ServerSettings", "create_app", "routes"]
