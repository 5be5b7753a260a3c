"""The Starlette application served on the HTTP address."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import prometheus_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from conveyor.server.gateway.dispatch import Gateway

__all__ = ["build_http_app"]


def build_http_app(
    *,
    health: Callable[[], Awaitable[bool]],
    gateway: Gateway | None = None,
    pages: Sequence[BaseRoute] = (),
) -> Starlette:
    """The HTTP app: GET /healthz and GET /metrics, plus the REST gateway when given.

    `health` answers whether this replica should receive traffic; /healthz turns it into
    200 {"status": "SERVING"} or 503 {"status": "NOT_SERVING"} (the gRPC health names),
    which load balancers and Kubernetes probes understand.

    With a `gateway`, GET /openapi.json describes the REST API and every other path is
    routed by the gateway (unknown paths get a 404 problem+json). `pages` (the
    dashboard's routes) come before the gateway.
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

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if gateway is not None:
        document = gateway

        async def openapi(_request: Request) -> Response:
            return Response(document.openapi(), media_type="application/json")

        routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    routes.extend(pages)
    app = Starlette(routes=routes)
    if gateway is not None:
        # Everything else, whatever the path (even one with a newline, which Starlette's
        # path patterns never match) and method, goes to the gateway, which answers
        # 404/405 itself as problem+json.
        app.router.default = _Endpoint(gateway.handle)
    return app


class _Endpoint:
    """The gateway's request handler as the router's default ASGI app: it sees every
    path and every method that no other route took."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # No WebSocket routes: refuse the handshake.
            await send({"type": "websocket.close", "code": 1000})
            return
        response = await self._handler(Request(scope, receive))
        await response(scope, receive, send)
