"""uvicorn run as one task inside the server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from conveyor.server.address import parse_address

__all__ = ["HttpServer"]


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling.

    uvicorn.Server.serve() replaces the process's SIGINT/SIGTERM handlers while it runs
    and re-raises the signal when it returns. The Conveyor process owns shutdown (it must
    drain gRPC too), so uvicorn is only told to stop.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves an ASGI app on host:port (port 0 picks a free one) until stopped."""

    def __init__(self, app: ASGIApp, address: str, *, reuse_port: bool = False) -> None:
        self._app = app
        self._address = address
        self._reuse_port = reuse_port
        self._server: _EmbeddedUvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The port actually bound (known once start() returned)."""
        return self._port

    async def start(self) -> None:
        """Bind and start serving; raises OSError (e.g. address in use) before serving."""
        # Binding here rather than in uvicorn: uvicorn reports a bind failure by calling
        # sys.exit() inside its task, and we could not learn the port it picked for 0.
        sock = _bind(self._address, self._reuse_port)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
        )
        self._server = _EmbeddedUvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        while not self._server.started:
            if self._task.done():
                sock.close()
                await self._task  # re-raises why it could not start
                raise RuntimeError("HTTP server exited during startup")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        """Stop accepting, give open requests `grace` seconds, then cancel them."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.config.timeout_graceful_shutdown = math.ceil(grace)
        server.should_exit = True
        # uvicorn notices should_exit within 0.1 s and enforces the grace itself; the
        # extra seconds only guard against it hanging.
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace + 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._server = self._task = None


def _bind(address: str, reuse_port: bool = False) -> socket.socket:
    host, port = parse_address(address)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restarted server rebind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # `serve --processes N`: the kernel spreads connections over the processes.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
