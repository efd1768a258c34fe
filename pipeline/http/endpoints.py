"""The operations routes: ``/metrics``, ``/healthz`` and ``/readyz``, thin over their queries
(``pipeline.metrics``, ``pipeline.health``).

Status codes as load balancers and Kubernetes read them: 200 is healthy or ready, 503 is not
ready (with a JSON body naming every check that fails); ``/healthz`` answers 200 whenever the
event loop runs, since answering at all is the proof.
"""

from __future__ import annotations

from pipeline.health import readiness
from pipeline.http.messages import Request, Response, json_response
from pipeline.http.router import Route, Router
from pipeline.metrics.registry import CONTENT_TYPE, PipelineMetrics
from pipeline.process_view import ProcessView


def operations_router(view: ProcessView, metrics: PipelineMetrics | None) -> Router:
    async def healthz(_request: Request) -> Response:
        return json_response(200, {"status": "alive"})

    async def readyz(_request: Request) -> Response:
        result = readiness(view)
        if result.ready:
            return json_response(200, {"status": "ready"})
        return json_response(503, {"status": "not ready", "problems": result.problems})

    routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
    if metrics is not None:

        async def scrape(_request: Request) -> Response:
            return Response(200, await metrics.scrape(), CONTENT_TYPE)

        routes.append(Route("/metrics", scrape))
    return Router(routes)
