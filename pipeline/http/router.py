"""Paths to handlers: methods, query parameters and errors checked once, for every route.

A route names the query parameters it takes; anything else is a 400 naming the parameter, so a
typo (``/metrics?nmae[]=...``) is never silently ignored.  Unknown paths are 404 naming the
known ones; a method other than GET or HEAD is 405 with ``Allow``.  A handler raising
``RequestRejected`` gets its status and problem as the JSON error body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pipeline.http.errors import RequestRejected
from pipeline.http.messages import Request, Response, error_response

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Route:
    path: str
    handler: Handler
    # The query parameters the handler reads; every other one is refused.
    parameters: frozenset[str] = frozenset()


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = {route.path: route for route in routes}

    @property
    def paths(self) -> list[str]:
        return sorted(self._routes)

    async def handle(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            return error_response(
                404, f"no such path {request.path!r} (known: {', '.join(self.paths)})"
            )
        if request.method not in METHODS:
            return error_response(
                405,
                f"method {request.method} is not allowed on {request.path} (only GET, HEAD)",
                headers=(("Allow", ", ".join(METHODS)),),
            )
        unknown = sorted(set(request.query) - route.parameters)
        if unknown:
            known = ", ".join(sorted(route.parameters)) or "none"
            return error_response(
                400, f"unknown query parameter {unknown[0]!r} on {request.path} (known: {known})"
            )
        try:
            return await route.handler(request)
        except RequestRejected as exc:
            return error_response(exc.status, exc.problem)
