"""The daemons' HTTP server: h11 driven by a small trio loop, and the routes it serves.

``serve_http`` (started with ``nursery.start``) listens where ``[http]`` says and answers with a
``Router``: each route a thin handler over a query the tests call without HTTP (STYLE 17).
"""

from pipeline.http.config import HttpConfig
from pipeline.http.errors import HttpError, RequestRejected
from pipeline.http.messages import Request, Response, error_response, json_response
from pipeline.http.router import Handler, Route, Router
from pipeline.http.server import HttpServer, serve_http

__all__ = [
    "Handler",
    "HttpConfig",
    "HttpError",
    "HttpServer",
    "Request",
    "RequestRejected",
    "Response",
    "Route",
    "Router",
    "error_response",
    "json_response",
    "serve_http",
]
