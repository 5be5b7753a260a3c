"""Worker: runs handlers for the tasks a Connect stream pushes to it.

    from conveyor.client import Client, Worker

    worker = Worker(Client(), queues=["default"], concurrency=4)

    @worker.task("email.send")
    def send(ctx):
        return {"sent_to": ctx.input["to"]}

    worker.run()          # blocks; SIGTERM or Ctrl-C stops it gracefully

The protocol, in order: Hello, Credit{concurrency} once Welcomed, then each pushed Lease
runs its handler (sync ones in a pool of `concurrency` threads, async ones on the loop)
while a heartbeat (one timer for all: _heartbeats.py) extends its lease every heartbeat
interval (the Welcome's, or a third of the lease if shorter) and carries its progress;
its log lines go in batches (_task_logs.py). A heartbeat answer with cancel_requested
sets `ctx.cancelled` and cancels an async handler. The outcome is reported on the stream
(freeing its window slot): the return value as the result, or the exception as the
error, retryable unless it is a PermanentError. When the stream breaks the worker
reconnects with backoff; handlers keep running and report with the unary RPCs once the
server answers again (a lease that expired meanwhile gets FAILED_PRECONDITION: logged
and dropped). Stopping shrinks the window to 0, waits up to the grace period for running
handlers, reports the ones still running as retryable `WorkerStopped` failures, and
closes the stream. Worker-control commands are obeyed and acknowledged
(_worker_control.py); with OpenTelemetry, each handler runs in a span in its creator's
trace (_task_runs.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from conveyor.client import _requests as req
from conveyor.client._async_client import AsyncClient
from conveyor.client._backoff import reconnect_delay
from conveyor.client._client import Client
from conveyor.client._heartbeats import Heartbeats
from conveyor.client._hello import default_worker_id, worker_hello
from conveyor.client._registry import H, Handler, Registry, registered
from conveyor.client._reports import Report, Reports
from conveyor.client._stream import Stream
from conveyor.client._task_runs import TaskRun, wait_until_done
from conveyor.client._thread_results import ThreadResults
from conveyor.client._worker_control import obey
from conveyor.client._worker_signals import forget_signals, stop_on_signals
from conveyor.client.errors import ConveyorError, from_rpc_error
from conveyor.v1 import task_pb2, worker_pb2

_log = logging.getLogger("conveyor.worker")

DEFAULT_GRACE = 30.0
# Stream errors that retrying cannot fix: the worker stops and raises them.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# After the grace period, how long the last reports may take before the worker gives up.
REPORT_DEADLINE = 5.0
# A stream open this long (seconds) counts as healthy: the reconnect backoff starts over.
HEALTHY_STREAM = 5.0
# How long the server may take to end the call once the worker half-closed it.
CLOSE_TIMEOUT = 2.0


class Worker:
    """Runs handlers, by task kind, for the tasks of some queues.

    `client` is a Client or an AsyncClient; the worker uses its target, key and
    project (unless `project` is given). `concurrency` handlers run at once. The
    worker id defaults to `<hostname>-<pid>`; `lease_duration` overrides the tasks'
    own. Handlers come from `@worker.task(kind)`, then from `@conveyor.client.task`;
    a task of a kind with neither fails at once as a non-retryable `UnknownKind`.
    `batches` (the default) takes tasks in LeaseBatch messages and reports in
    ReportBatch messages; False uses one message per task (servers before batches).
    `tracer_provider` traces the handlers (default: OpenTelemetry's global one, if set).
    `capture_output` sends what handlers print (stdout, stderr) to their task's log.
    """

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        queues: Iterable[str] = ("default",),
        concurrency: int = 1,
        project: str | None = None,
        worker_id: str | None = None,
        lease_duration: req.Seconds | None = None,
        labels: Mapping[str, str] | None = None,
        shutdown_grace: float = DEFAULT_GRACE,
        batches: bool = True,
        tracer_provider: Any = None,
        capture_output: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.queues = list(queues)
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        self.concurrency = concurrency
        self.project = req.parent(project or client.project)
        self.worker_id = worker_id or default_worker_id()
        self.lease_duration = lease_duration
        self.labels = dict(labels or {})
        self.shutdown_grace = shutdown_grace
        self.tracer_provider = tracer_provider
        self.capture_output = capture_output
        self.handlers = Registry()
        self._aio: AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._running: dict[tuple[str, str], TaskRun] = {}
        self._threads = ThreadResults()
        self._heartbeats = Heartbeats(
            self._running, lambda: self._stream, lambda: self._heartbeat_interval, lease_duration
        )
        self._reports = Reports(batches=batches, max_batch=concurrency)
        self._stream: Stream | None = None
        self._generation = 0
        self._heartbeat_interval: float | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stop_early = False
        self._grace = shutdown_grace
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._attempt: Stream | None = None
        self._connect_call: Any = None
        self._done: asyncio.Event | None = None
        self._started = False

    def task(self, kind: str) -> Callable[[H], H]:
        """A decorator registering a handler for `kind` on this worker."""
        return self.handlers.task(kind)

    def handler_for(self, kind: str) -> Handler | None:
        return self.handlers.get(kind) or registered.get(kind)

    @property
    def name(self) -> str:
        """The worker's resource name, `projects/{project}/workers/{worker}`."""
        return f"{self.project}/workers/{self.worker_id}"

    # Running and stopping.

    def run(self) -> None:
        """Runs the worker in this thread until stopped (SIGTERM or SIGINT, when this
        is the main thread, stop gracefully); raises what ended it otherwise."""
        main_thread = threading.current_thread() is threading.main_thread()
        asyncio.run(self._main(own_client=True, handle_signals=main_thread))

    async def arun(self) -> None:
        """Runs the worker on the running loop until `stop()`; with a sync Client, the
        worker opens an AsyncClient of its own to the same server."""
        await self._main(own_client=not isinstance(self.client, AsyncClient), handle_signals=False)

    async def stop(self, grace: float | None = None) -> None:
        """Stops gracefully (see the module doc) and returns once `arun()` has ended."""
        self.request_stop(grace)
        if self._done is not None:
            await self._done.wait()

    def request_stop(self, grace: float | None = None) -> None:
        """Asks for a graceful stop without waiting; safe from any thread or signal."""
        if grace is not None:
            self._grace = grace
        loop, event = self._loop, self._stop_requested
        if loop is None or event is None:
            self._stop_early = True
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def _main(self, *, own_client: bool, handle_signals: bool) -> None:
        if self._started:
            raise RuntimeError("a Worker runs once")
        self._started = True
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_requested = asyncio.Event()
        self._done = asyncio.Event()
        self._closed = asyncio.Event()
        if self._stop_early:
            self._stop_requested.set()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.concurrency, thread_name_prefix=f"conveyor-{self.worker_id}"
        )
        if own_client:
            self._aio = AsyncClient(
                self.client.target, api_key=self.client.api_key, project=self.project
            )
        else:
            assert isinstance(self.client, AsyncClient)
            self._aio = self.client
        self._reports.client = self._aio
        if handle_signals:
            stop_on_signals(loop, self.request_stop)
        drain = asyncio.create_task(self._drain_on_stop())
        try:
            await self._connect_loop()
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            await self._abandon_all()
            self._heartbeats.stop()
            if handle_signals:
                forget_signals(loop)
            self._executor.shutdown(wait=False, cancel_futures=True)
            if own_client:
                await self._aio.close()
            self._done.set()
            _log.info("worker %s stopped", self.name)

    async def _connect_loop(self) -> None:
        assert self._loop is not None and self._closed is not None
        failures = 0
        while not self._closing:
            began = self._loop.time()
            welcomed = False
            broke: ConveyorError | None = None
            try:
                welcomed = await self._session()
            except ConveyorError as error:
                if error.code() in FATAL_CODES:
                    _log.error("worker refused: %s", error)
                    raise
                _log.warning("worker stream broke: %s", error)
                broke = error
            if self._closing:
                return
            # A stream that lived a while starts the backoff over; one that keeps
            # breaking right after its Welcome (a failing server) backs off like a refusal.
            healthy = welcomed and self._loop.time() - began >= HEALTHY_STREAM
            failures = 0 if healthy else failures + 1
            delay = reconnect_delay(failures, broke)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)

    async def _session(self) -> bool:
        """One Connect call; returns whether it was welcomed, raises how it broke."""
        assert self._aio is not None
        self._generation += 1
        stream = Stream(self._generation)
        stream.send(worker_hello(self, self._reports.batches))
        call = self._aio.workers.Connect(stream.requests())
        self._attempt, self._connect_call = stream, call
        try:
            async for response in call:
                self._on_response(stream, response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        except asyncio.CancelledError:
            # Our own call.cancel() after a close the server did not answer in time.
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or not self._closing:
                raise
        finally:
            self._attempt = self._connect_call = None
            self._on_stream_end(stream)
            call.cancel()
        return stream.welcomed

    def _on_response(self, stream: Stream, response: worker_pb2.ConnectResponse) -> None:
        kind = response.WhichOneof("message")
        if kind == "welcome":
            self._on_welcome(stream, response.welcome)
        elif kind == "assignment":
            self._start(stream, response.assignment)
        elif kind == "assignments":
            for lease in response.assignments.leases:
                self._start(stream, lease)
        elif kind == "heartbeat":
            beat = response.heartbeat
            entry = self._running.get((beat.name, beat.lease_id))
            if entry is not None:
                entry.on_heartbeat_answer(beat)
        elif kind in ("report_ack", "report_acks"):
            self._reports.on_response(response)
        elif kind == "command":
            self._on_command(stream, response.command)

    # Worker control.

    def _on_command(self, stream: Stream, command: worker_pb2.WorkerCommand) -> None:
        """Carries out a worker-control command and acknowledges it on the stream.

        RESTART_WORKER and a consumer change end this stream after the ack: the connect
        loop opens a new one with a new Hello (the new queues); running tasks go on and
        report with the unary RPCs. RESIZE_POOL changes the concurrency and the window.
        """
        obeyed = obey(command, self.concurrency, self.queues)
        change, self.concurrency = obeyed.concurrency - self.concurrency, obeyed.concurrency
        self._reports.max_batch = self.concurrency
        self.queues[:] = obeyed.queues
        if obeyed.verb == "RESIZE_POOL":
            if self._executor is not None:
                self._executor._max_workers = max(self._executor._max_workers, self.concurrency)
            if not self._stop_requested_set():
                stream.grant(change)
        ok = obeyed.ack.ok
        _log.info("worker %s: command %s %s (ok=%s)", self.name, command.command, obeyed.verb, ok)
        stream.send(worker_pb2.ConnectRequest(command_ack=obeyed.ack))
        if obeyed.reconnect:
            stream.close()

    def _on_welcome(self, stream: Stream, welcome: worker_pb2.Welcome) -> None:
        stream.welcomed = True
        interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
        self._heartbeat_interval = interval if interval > 0 else None
        self._stream = stream
        _log.info("worker %s connected", welcome.worker or self.name)
        # Tasks still running from an earlier stream hold their slots until reported.
        if not self._stop_requested_set():
            stream.grant(self.concurrency - len(self._running))

    def _on_stream_end(self, stream: Stream) -> None:
        stream.close()  # also ends grpc's reader of the request iterator
        if self._stream is stream:
            self._stream = None
        self._reports.on_stream_end()

    def _stop_requested_set(self) -> bool:
        return self._stop_requested is not None and self._stop_requested.is_set()

    # Tasks.

    def _start(self, stream: Stream, lease: task_pb2.Lease) -> None:
        entry = TaskRun.of(lease, self.worker_id, stream.generation, self.lease_duration)
        entry.stream_of, entry.client = self._heartbeats.stream, self._aio
        entry.capture, entry.threads = self.capture_output, self._threads
        self._running[entry.key] = entry
        self._heartbeats.add(entry, asyncio.get_running_loop())
        entry.runner = asyncio.create_task(self._run(entry), name=f"conveyor {entry.ctx.name}")

    async def _run(self, entry: TaskRun) -> None:
        handler = self.handler_for(entry.ctx.kind)
        report = await entry.execute(handler, self._executor, self.tracer_provider)
        self._report(entry, report)

    def _report(self, entry: TaskRun, report: Report) -> None:
        self._running.pop(entry.key, None)
        free_slot = not self._stop_requested_set()
        self._reports.send(self._stream, entry.generation, entry.key, report, free_slot)

    # Stopping.

    async def _drain_on_stop(self) -> None:
        assert self._stop_requested is not None and self._loop is not None
        await self._stop_requested.wait()
        _log.info("worker %s draining for up to %.1f s", self.name, self._grace)
        stream = self._stream
        if stream is not None and stream.open:
            stream.grant(-stream.window)
        deadline = self._loop.time() + self._grace
        await wait_until_done(self._running, deadline)
        for entry in list(self._running.values()):
            entry.abandon()
        await wait_until_done(self._running, self._loop.time() + REPORT_DEADLINE)
        await self._reports.wait(self._loop.time() + REPORT_DEADLINE)
        self._close()

    def _close(self) -> None:
        """Ends the stream loop: half-closes the open call, cancels it if it lingers."""
        assert self._loop is not None and self._closed is not None
        self._closing = True
        self._closed.set()
        if self._attempt is not None:
            self._attempt.close()
            call = self._connect_call
            self._loop.call_later(CLOSE_TIMEOUT, call.cancel)

    async def _abandon_all(self) -> None:
        """After the stream loop ended (stopped or refused): cancel what still runs."""
        for entry in list(self._running.values()):
            if entry.runner is not None:
                entry.runner.cancel()
        runners = [e.runner for e in self._running.values() if e.runner is not None]
        if runners:
            await asyncio.wait(runners, timeout=REPORT_DEADLINE)
        await self._reports.cancel()
