"""The server process: start everything in order, stop it in reverse on SIGTERM.

Start: logging, database (DATABASE_URL or the embedded PostgreSQL), migrations, pool,
shared server key, bootstrap hook, background loops, gRPC, HTTP, then server.json.
Stop: report NOT_SERVING, drain gRPC and HTTP together for the grace period, stop the
loops, close the pool, stop the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from conveyor.server.address import connectable_host, format_address, parse_address
from conveyor.server.compat import Anonymous, compat_routes
from conveyor.server.context import AppContext
from conveyor.server.dashboard import Dashboard
from conveyor.server.datadir import DataDirLock
from conveyor.server.domain.anonymous_keys import ensure_anonymous_key
from conveyor.server.embedded_install import embedded_postgres
from conveyor.server.gateway.app import build_http_app
from conveyor.server.gateway.dispatch import Gateway
from conveyor.server.grpc_server import GrpcServer, Register
from conveyor.server.http_server import HttpServer
from conveyor.server.logging import configure_logging, get_logger
from conveyor.server.loops.database_probe import DatabaseProbe
from conveyor.server.settings import Settings
from conveyor.server.store import server_secrets
from conveyor.server.store.db import open_pool
from conveyor.server.store.migrate import migrate
from conveyor.server.tracing import Tracing

__all__ = ["Bootstrap", "ConveyorServer", "Register", "ServerHooks", "run_server"]

Bootstrap = Callable[[AppContext], Awaitable[None]]
"""Runs once the pool is open, before anything listens (e.g. mints the admin key)."""

_log = get_logger(__name__)

QUIET_PERIOD = 0.1
"""Seconds with no contract call in flight after which a stopping server closes gRPC."""

END_MARGIN = 1.0
"""Seconds before the grace runs out at which a stopping server ends the calls still in
flight with UNAVAILABLE (at most a quarter of the grace)."""


@dataclass(frozen=True)
class ServerHooks:
    """What the rest of the application plugs into the runtime."""

    register: Register | None = None
    bootstrap: Bootstrap | None = None
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    tracing: Tracing | None = None
    """OpenTelemetry (None: off). run_server builds it from the OTEL_* environment."""


class ConveyorServer:
    """One Conveyor server, runnable in-process (tests) or by run_server (the process).

    `await start()` returns once both listeners accept connections and server.json is
    written; `await stop()` undoes it. A failed start cleans up what it had started.
    """

    def __init__(self, settings: Settings, hooks: ServerHooks | None = None) -> None:
        self._settings = settings
        self._hooks = hooks or ServerHooks()
        self._stack = contextlib.AsyncExitStack()
        self._ctx: AppContext | None = None
        self._grpc: GrpcServer | None = None
        self._http: HttpServer | None = None
        self._serving = False
        self._server_json: str | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def data_dir(self) -> Path:
        return self._settings.data_dir

    @property
    def context(self) -> AppContext:
        """The shared state (raises before start())."""
        if self._ctx is None:
            raise RuntimeError("server not started")
        return self._ctx

    @property
    def grpc_port(self) -> int:
        return self._grpc.port if self._grpc is not None else 0

    @property
    def http_port(self) -> int:
        return self._http.port if self._http is not None else 0

    @property
    def grpc_target(self) -> str:
        """host:port for grpc.aio.insecure_channel."""
        host, _ = parse_address(self._settings.grpc_address)
        return format_address(connectable_host(host), self.grpc_port)

    @property
    def http_address(self) -> str:
        """host:port of the HTTP listener, as written to server.json."""
        host, _ = parse_address(self._settings.http_address)
        return format_address(connectable_host(host), self.http_port)

    @property
    def http_base_url(self) -> str:
        """e.g. "http://127.0.0.1:8080" (no trailing slash)."""
        return f"http://{self.http_address}"

    async def start(self) -> None:
        """Start everything; on failure, stop what had started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self) -> None:
        settings = self._settings
        tracing = self._hooks.tracing
        configure_logging(settings.log_level, trace_ids=tracing is not None)
        if tracing is not None:
            # Last out: the spans of the shutdown itself are flushed too.
            self._stack.callback(tracing.shutdown)
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # First, before the embedded PostgreSQL or server.json are touched. The
        # processes of `serve --processes N` share the directory: their supervisor
        # holds the lock for them.
        if settings.process_slot is None:
            lock = DataDirLock(settings.data_dir)
            lock.acquire()
            self._stack.callback(lock.release)

        database_url = settings.database_url
        if database_url is None:
            embedded = embedded_postgres(settings.data_dir)
            # Pushed before starting: a start that fails halfway still gets stopped.
            self._stack.push_async_callback(asyncio.to_thread, embedded.stop)
            database_url = await asyncio.to_thread(embedded.start)

        await migrate(database_url, prepare=settings.database_prepare)
        pool = await open_pool(
            database_url,
            prepare=settings.database_prepare,
            instrument=tracing.instrument_connection if tracing is not None else None,
        )
        self._stack.push_async_callback(pool.close)
        server_key = await server_secrets.get_or_create(pool, server_secrets.SERVER_KEY)
        probe = DatabaseProbe(pool)
        ctx = AppContext(settings, pool, database_url, server_key, database=probe, tracing=tracing)
        self._ctx = ctx
        self._stack.push_async_callback(probe.stop)
        await probe.start()

        if self._hooks.bootstrap is not None:
            await self._hooks.bootstrap(ctx)
        interceptors = list(self._hooks.interceptors)
        if tracing is not None:
            # Outermost, so the call's span is current for everything the call logs.
            interceptors.insert(0, tracing.grpc_interceptor())
        grpc_server = GrpcServer(ctx, register=self._hooks.register, interceptors=interceptors)
        # An outage turns health NOT_SERVING, and the recovery SERVING again.
        probe.subscribe(grpc_server.set_serving)
        for loop in ctx.loops:
            self._stack.push_async_callback(loop.stop)
            await loop.start()

        # Both listeners drain together in stop(); these callbacks only matter when a
        # later start step fails (and are no-ops after stop()).
        self._grpc = grpc_server
        self._stack.push_async_callback(grpc_server.stop, 0)
        await grpc_server.start()
        # The REST gateway calls gRPC through a real channel (opened on first use), by
        # default to the listener just started, so REST gets the same interceptor.
        gateway = Gateway(
            settings.gateway_target or self.grpc_target,
            traceparent=tracing.traceparent if tracing is not None else None,
        )
        self._stack.push_async_callback(gateway.close)
        anonymous = None
        if settings.compat_anonymous is not None:
            token = await ensure_anonymous_key(pool, server_key, settings.compat_anonymous)
            anonymous = Anonymous(settings.compat_anonymous, token)
        # The dashboard calls gRPC the same way, with the signed-in session as bearer.
        dashboard = Dashboard(
            pool, server_key, settings.gateway_target or self.grpc_target, ctx.shutting_down
        )
        self._stack.push_async_callback(dashboard.close)
        http_app = build_http_app(
            health=self._healthy,
            gateway=gateway,
            # The seed APIs (issue 20) call v1 through the gateway's channel too.
            pages=[*compat_routes(gateway, anonymous), *dashboard.routes()],
        )
        if tracing is not None:
            tracing.instrument_http(http_app)
        http = HttpServer(
            http_app,
            settings.http_address,
            reuse_port=settings.process_slot is not None,
        )
        self._http = http
        self._stack.push_async_callback(http.stop, 0)
        await http.start()

        self._serving = True
        self._write_server_json()
        _log.info(
            "conveyor serving",
            grpc=self.grpc_target,
            http=self.http_base_url,
            services=grpc_server.services,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Drain for `grace` seconds (default settings.shutdown_grace), then release all."""
        if grace is None:
            grace = self._settings.shutdown_grace
        _log.info("conveyor stopping", grace=grace)
        deadline = asyncio.get_running_loop().time() + grace
        self._serving = False
        self._remove_server_json()
        if self._ctx is not None:
            # From here the interceptor answers new calls UNAVAILABLE (which clients
            # retry, elsewhere) while the calls in flight finish.
            self._ctx.shutting_down.set()
        drains = []
        if self._grpc is not None:
            await self._grpc.enter_graceful_shutdown()
            drains.append(self._drain_grpc(self._grpc, deadline))
        if self._http is not None:
            drains.append(self._http.stop(grace))
        # Together, so a shutdown takes one grace period rather than one per listener.
        await asyncio.gather(*drains)
        await self._stack.aclose()
        _log.info("conveyor stopped")

    async def _drain_grpc(self, grpc_server: GrpcServer, deadline: float) -> None:
        """Wait (until `deadline`) for the contract calls in flight, then stop gRPC.

        gRPC's own stop() ends the calls it has received but not yet handed to us with
        CANCELLED, which no client retries. So the listener stays open, the interceptor
        answering new calls UNAVAILABLE with RetryInfo, until nothing has been in flight
        for QUIET_PERIOD: by then the callers are backing off and gRPC holds no call.
        """
        loop = asyncio.get_running_loop()
        if self._ctx is not None:
            # Shortly before the grace runs out, whatever is still in flight (a call
            # waiting on the pool, a stream that did not end) is ended UNAVAILABLE by us,
            # and gRPC's stop gets the rest of the grace to deliver those statuses.
            margin = min(END_MARGIN, (deadline - loop.time()) / 4)
            try:
                async with asyncio.timeout_at(deadline - margin):
                    await self._ctx.in_flight.wait_quiet(QUIET_PERIOD)
            except TimeoutError:
                self._ctx.in_flight.end_all()
                _log.info("shutdown ended calls in flight", calls=self._ctx.in_flight.count)
        await grpc_server.stop(max(0.0, deadline - loop.time()))

    async def _healthy(self) -> bool:
        return self._serving and self._ctx is not None and self._ctx.database.available

    def _write_server_json(self) -> None:
        # Tools and tests find a server started on port 0 through this file. Written to a
        # temporary name and renamed, so a reader never sees half of it.
        text = json.dumps({"grpc": self.grpc_target, "http": self.http_address})
        path = self._server_json_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".server.json.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        self._server_json = text

    def _server_json_path(self) -> Path:
        slot = self._settings.process_slot
        if slot is None:
            return self.data_dir / "server.json"
        # One of `serve --processes N`: the supervisor writes server.json (processes.py).
        return self.data_dir / "processes" / f"{slot}.json"

    def _remove_server_json(self) -> None:
        # Only our own: another server may have taken over the data directory since.
        path = self._server_json_path()
        with contextlib.suppress(FileNotFoundError):
            if self._server_json is not None and path.read_text("utf-8") == self._server_json:
                path.unlink()
        self._server_json = None


def freeze_startup_objects() -> None:
    """Moves every object alive once the server has started (modules, protobuf
    descriptors, the app's services and their SQL) out of the cyclic collector's sight.

    They live as long as the process, yet each full collection walked them all: some
    30 ms on the bench machine, a pause of every call in flight and the largest part of
    the enqueue-to-start tail. What is made after this is collected as before.
    """
    gc.collect()
    gc.freeze()


async def run_server(
    settings: Settings,
    *,
    register: Register | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    bootstrap: Bootstrap | None = None,
) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully and return.

    Tracing is on when the OTEL_* environment says so (conveyor.server.tracing).
    """
    # Configured here too, so what tracing says about itself is logged as JSON.
    configure_logging(settings.log_level)
    tracing = Tracing.from_env(os.environ)
    server = ConveyorServer(settings, ServerHooks(register, bootstrap, interceptors, tracing))
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        _log.info("shutdown requested", signal=signum.name)
        stop_requested.set()
        # A second signal during the drain gets the default action: an impatient
        # operator (or an orchestrator past its own grace period) can still kill us.
        for sig in signals:
            loop.remove_signal_handler(sig)

    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    if settings.process_slot is not None:
        # One of `serve --processes N`: the supervisor turns SIGINT (a Ctrl-C reaches
        # the whole process group) into one SIGTERM for each process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signals = (signal.SIGTERM,)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        # A signal during start is kept and acted on as soon as start returns.
        await server.start()
        freeze_startup_objects()
        try:
            await stop_requested.wait()
        finally:
            await server.stop()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
