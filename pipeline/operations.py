"""A daemon's operations surface: its metrics (``[metrics]``) and its HTTP server (``[http]``).

``start_operations`` builds the daemon's own metrics registry and, when ``http.port`` is set,
starts ``serve_http`` in the given nursery with ``/metrics``, ``/healthz`` and ``/readyz``
over ``view``.  The server runs until that nursery is cancelled, so ``/readyz`` answers 503
through the drain, until the process exits.
"""

from __future__ import annotations

import trio

from pipeline.errors import StartupError
from pipeline.http import HttpServer, serve_http
from pipeline.http.endpoints import operations_router
from pipeline.metrics.registry import PipelineMetrics
from pipeline.process_view import ProcessView


async def start_operations(
    nursery: trio.Nursery, view: ProcessView
) -> tuple[PipelineMetrics | None, HttpServer | None]:
    config = view.config
    metrics = PipelineMetrics(config.metrics, view) if config.metrics.enabled else None
    if not config.http.enabled:
        return metrics, None
    router = operations_router(view, metrics)
    try:
        server: HttpServer = await nursery.start(serve_http, router, config.http)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {config.http.host}:{config.http.port} (http): {exc.strerror}"
        ) from exc
    return metrics, server
