"""The gRPC listener: registered services plus health checking and reflection."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from conveyor.client._limits import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from conveyor.server.context import AppContext
from conveyor.server.reflection import enable_reflection

__all__ = ["HEALTH_SERVICE_NAME", "GrpcServer", "Register"]

Register = Callable[[grpc.aio.Server, AppContext], Sequence[str]]
"""Adds servicers to the server; returns the full names of the services it added
(e.g. "conveyor.v1.TaskService") so health and reflection can announce them."""

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# gRPC sets SO_REUSEPORT by default on Linux, so a second server on a taken port would
# "bind" and silently share the traffic. A taken port must be an error instead.
# Message sizes: the one set of limits in conveyor.client._limits (clients receive at
# least what this sends).
# Pings: the clients send one every 30 s on an open call (CHANNEL_OPTIONS); gRPC's
# server default strikes pings closer than 5 min apart while it sends no data, and
# closes the connection (GOAWAY too_many_pings) on the third, which hit a worker
# stream whose queues stayed empty for a few minutes.
_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class GrpcServer:
    """A grpc.aio server bound to host:port (port 0 picks a free one)."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        register: Register | None,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
    ) -> None:
        self._ctx = ctx
        # The processes of `serve --processes N` share the port on purpose.
        shared = ctx.settings.process_slot is not None
        options = [("grpc.so_reuseport", 1), *_OPTIONS[1:]] if shared else _OPTIONS
        self._server = grpc.aio.server(interceptors=list(interceptors), options=options)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._services = list(register(self._server, ctx)) if register is not None else []
        enable_reflection([*self._services, HEALTH_SERVICE_NAME], self._server)
        self._port = 0
        self._started = False

    @property
    def port(self) -> int:
        """The port actually bound (known once start() returned)."""
        return self._port

    @property
    def services(self) -> list[str]:
        """The service names the register hook reported."""
        return list(self._services)

    async def start(self) -> None:
        """Bind, mark every service SERVING and start serving.

        Raises RuntimeError when the address cannot be bound.
        """
        self._port = self._server.add_insecure_port(self._ctx.settings.grpc_address)
        # "" is the whole server, the name grpc-health-probe and load balancers ask for.
        await self.set_serving(self._ctx.database.available)
        await self._server.start()
        self._started = True

    async def set_serving(self, serving: bool) -> None:
        """Report every service SERVING or NOT_SERVING (no-op once shutting down)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._services]:
            await self._health.set(name, status)

    async def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for everything, so balancers stop sending new calls."""
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, give in-flight ones `grace` seconds, then cancel them."""
        if self._started:
            self._started = False
            await self._server.stop(grace)
