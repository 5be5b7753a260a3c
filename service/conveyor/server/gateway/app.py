"""The Starlette application served on the HTTP address."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import prometheus_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["build_http_app"]


def build_http_app(*, health: Callable[[], Awaitable[bool]]) -> Starlette:
    """The HTTP app: GET /healthz and GET /metrics.

    `health` answers whether this replica should receive traffic; /healthz turns it into
    200 {"status": "SERVING"} or 503 {"status": "NOT_SERVING"} (the gRPC health names),
    which load balancers and Kubernetes probes understand.
    """

    async def healthz(_request: Request) -> Response:
        if await health():
            return JSONResponse({"status": "SERVING"})
        return JSONResponse({"status": "NOT_SERVING"}, status_code=503)

    async def metrics(_request: Request) -> Response:
        return Response(
            prometheus_client.generate_latest(prometheus_client.REGISTRY),
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
