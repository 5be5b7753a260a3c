"""Worker: runs handlers for the tasks a Connect stream pushes to it.

    from conveyor.client import Client, Worker

    worker = Worker(Client(), queues=["default"], concurrency=4)

    @worker.task("email.send")
    def send(ctx):
        return {"sent_to": ctx.input["to"]}

    worker.run()          # blocks; SIGTERM or Ctrl-C stops it gracefully

The protocol, in order: Hello, Credit{concurrency} once Welcomed, then each pushed
Lease runs its handler (sync ones in a thread pool of `concurrency` threads, async
ones on the loop) while a heartbeat extends its lease every heartbeat interval (the
Welcome's, or a third of the lease, whichever is shorter) and carries its progress.
A heartbeat answer with cancel_requested sets `ctx.cancelled` and cancels an async
handler. The outcome is reported on the stream (a report frees its window slot): the
return value as the result, or the exception as the error, retryable unless it is a
PermanentError. When the stream breaks the worker reconnects with backoff; handlers
keep running and report with the unary RPCs once the server answers again (a lease
that expired meanwhile gets FAILED_PRECONDITION: logged and dropped). Stopping
shrinks the window to 0, waits up to the grace period for running handlers, reports
the ones still running as retryable `WorkerStopped` failures, and closes the stream.

Worker-control commands pushed on the stream are obeyed and acknowledged: RESIZE_POOL
changes `concurrency` (and the window) by its delta, ADD_CONSUMER / CANCEL_CONSUMER
change `queues`, and they and RESTART_WORKER then open a new stream with a new Hello.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
import random
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import grpc
from google.protobuf import json_format

from conveyor.client import _requests as req
from conveyor.client._async_client import AsyncClient
from conveyor.client._client import Client
from conveyor.client._context import TaskContext
from conveyor.client._registry import H, Handler, Registry, registered
from conveyor.client._stream import Stream
from conveyor.client.errors import ConveyorError, from_rpc_error
from conveyor.v1 import enums_pb2, task_pb2, worker_pb2

_log = logging.getLogger("conveyor.worker")

DEFAULT_LEASE = 30.0
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


def sdk_version() -> str:
    try:
        return f"conveyor-python/{metadata.version('conveyor')}"
    except metadata.PackageNotFoundError:
        return "conveyor-python/0"


def default_worker_id() -> str:
    """`<hostname>-<pid>` as a worker id: 1..63 of [a-z0-9-]."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "worker"
    suffix = f"-{os.getpid()}"
    return host[: 63 - len(suffix)].rstrip("-") + suffix


@dataclass(eq=False)
class _Running:
    """A task this worker holds: its context, runner and the stream it came on."""

    ctx: TaskContext
    generation: int
    lease_seconds: float
    runner: asyncio.Task[None] | None = None
    handler: asyncio.Future[Any] | None = None
    is_async: bool = False
    abandoned: bool = False
    key: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.ctx.name, self.ctx.lease_id)


class Worker:
    """Runs handlers, by task kind, for the tasks of some queues.

    `client` is a Client or an AsyncClient; the worker uses its target, key and
    project (unless `project` is given). `concurrency` handlers run at once. The
    worker id defaults to `<hostname>-<pid>`; `lease_duration` overrides the tasks'
    own. Handlers come from `@worker.task(kind)`, then from `@conveyor.client.task`;
    a task of a kind with neither fails at once as a non-retryable `UnknownKind`.
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
        self.handlers = Registry()
        self._aio: AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._running: dict[tuple[str, str], _Running] = {}
        self._unacked: dict[tuple[str, str], worker_pb2.ConnectRequest] = {}
        self._unary_reports: set[asyncio.Task[None]] = set()
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
        self._settled: asyncio.Event | None = None
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
        asyncio.run(
            self._main(
                own_client=True,
                handle_signals=threading.current_thread() is threading.main_thread(),
            )
        )

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
        self._settled = asyncio.Event()
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
        if handle_signals:
            self._install_signals(loop)
        drain = asyncio.create_task(self._drain_on_stop())
        try:
            await self._connect_loop()
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            await self._abandon_all()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self._executor.shutdown(wait=False, cancel_futures=True)
            if own_client:
                await self._aio.close()
            self._done.set()
            _log.info("worker %s stopped", self.name)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(signum: signal.Signals) -> None:
            _log.info("worker stopping on %s", signum.name)
            self.request_stop()
            # A second signal gets the default action, for an impatient operator.
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    async def _connect_loop(self) -> None:
        assert self._loop is not None and self._closed is not None
        failures = 0
        while not self._closing:
            began = self._loop.time()
            welcomed = False
            try:
                welcomed = await self._session()
            except ConveyorError as error:
                if error.code() in FATAL_CODES:
                    _log.error("worker refused: %s", error)
                    raise
                _log.warning("worker stream broke: %s", error)
            if self._closing:
                return
            # A stream that lived a while starts the backoff over; one that keeps
            # breaking right after its Welcome (a failing server) backs off like a refusal.
            healthy = welcomed and self._loop.time() - began >= HEALTHY_STREAM
            failures = 0 if healthy else failures + 1
            # Full jitter, 0.1 s doubling up to 5 s.
            delay = random.uniform(0, min(5.0, 0.1 * 2**failures))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)

    async def _session(self) -> bool:
        """One Connect call; returns whether it was welcomed, raises how it broke."""
        assert self._aio is not None
        self._generation += 1
        stream = Stream(self._generation)
        hello = worker_pb2.Hello(
            parent=self.project,
            worker=self.worker_id,
            queues=self.queues,
            capacity=self.concurrency,
            labels=self.labels,
            sdk_version=sdk_version(),
        )
        if self.lease_duration is not None:
            hello.lease_duration.CopyFrom(req.duration(self.lease_duration))
        stream.send(worker_pb2.ConnectRequest(hello=hello))
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
        elif kind == "heartbeat":
            beat = response.heartbeat
            entry = self._running.get((beat.name, beat.lease_id))
            if entry is not None and beat.cancel_requested:
                if not beat.HasField("lease_expire_time"):
                    # Not extended: the lease is gone and the task moved on without us.
                    _log.warning("task %s: lease lost; stopping its handler", beat.name)
                self._cancel(entry)
        elif kind == "report_ack":
            self._on_ack(response.report_ack)
        elif kind == "command":
            self._on_command(stream, response.command)

    # Worker control.

    def _on_command(self, stream: Stream, command: worker_pb2.WorkerCommand) -> None:
        """Carries out a worker-control command and acknowledges it on the stream.

        RESTART_WORKER and a consumer change end this stream after the ack: the connect
        loop opens a new one with a new Hello (the new queues); running tasks go on and
        report with the unary RPCs. RESIZE_POOL changes the concurrency and the window.
        """
        verb = enums_pb2.CommandVerb.Name(command.verb).removeprefix("COMMAND_VERB_")
        args = json_format.MessageToDict(command.args)
        ok, error, reconnect = True, "", False
        result: dict[str, Any] = {}
        if verb == "RESTART_WORKER":
            reconnect = True
        elif verb == "RESIZE_POOL":
            delta = int(args.get("delta", 0))
            new = max(1, self.concurrency + delta)
            change, self.concurrency = new - self.concurrency, new
            if self._executor is not None:
                self._executor._max_workers = max(self._executor._max_workers, new)
            if not self._stop_requested_set():
                stream.grant(change)
            result = {"concurrency": new}
        elif verb in ("ADD_CONSUMER", "CANCEL_CONSUMER"):
            queue = str(args.get("queue", ""))
            if verb == "ADD_CONSUMER" and queue not in self.queues:
                self.queues.append(queue)
                reconnect = True
            elif verb == "CANCEL_CONSUMER" and queue in self.queues:
                if len(self.queues) == 1:
                    ok, error = False, "a worker needs at least one queue"
                else:
                    self.queues.remove(queue)
                    reconnect = True
            result = {"queues": list(self.queues)}
        else:
            ok, error = False, f"{verb} is not a worker-control command this worker knows"
        _log.info("worker %s: command %s %s (ok=%s)", self.name, command.command, verb, ok)
        ack = worker_pb2.CommandAck(command=command.command, ok=ok, error=error)
        ack.result.update(result)
        stream.send(worker_pb2.ConnectRequest(command_ack=ack))
        if reconnect and ok:
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
        # Reports sent on the lost stream may not have arrived: send them again with the
        # unary RPCs (one that did arrive is refused as stale, which changes nothing).
        for key, message in list(self._unacked.items()):
            del self._unacked[key]
            self._report_unary(message)

    def _stop_requested_set(self) -> bool:
        return self._stop_requested is not None and self._stop_requested.is_set()

    # Tasks.

    def _lease_seconds(self, task: task_pb2.Task) -> float:
        if self.lease_duration is not None:
            return req.seconds(self.lease_duration)
        if task.HasField("lease_duration"):
            return task.lease_duration.ToTimedelta().total_seconds() or DEFAULT_LEASE
        return DEFAULT_LEASE

    def _start(self, stream: Stream, lease: task_pb2.Lease) -> None:
        entry = _Running(
            TaskContext(lease, self.worker_id), stream.generation, self._lease_seconds(lease.task)
        )
        self._running[entry.key] = entry
        entry.runner = asyncio.create_task(self._run(entry), name=f"conveyor {entry.ctx.name}")

    async def _run(self, entry: _Running) -> None:
        beat = asyncio.create_task(self._heartbeat(entry))
        try:
            report = await self._execute(entry)
        finally:
            beat.cancel()
        self._report(entry, report)

    async def _execute(self, entry: _Running) -> worker_pb2.ConnectRequest:
        ctx = entry.ctx
        handler = self.handler_for(ctx.kind)
        if handler is None:
            failure = ctx.failure(
                "UnknownKind",
                f"worker {self.worker_id} has no handler for kind {ctx.kind!r}",
                retryable=False,
            )
            return worker_pb2.ConnectRequest(fail=failure)
        try:
            result = await self._invoke(entry, handler)
        except asyncio.CancelledError as error:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the runner itself is being cancelled: nothing to report
            return worker_pb2.ConnectRequest(fail=self._failure(entry, error))
        except Exception as error:
            return worker_pb2.ConnectRequest(fail=self._failure(entry, error))
        try:
            return worker_pb2.ConnectRequest(complete=ctx.completion(result))
        except TypeError as error:
            # The same code would return the same thing again: no retry.
            failure = ctx.failure("TypeError", f"the result is not JSON: {error}", retryable=False)
            return worker_pb2.ConnectRequest(fail=failure)

    @staticmethod
    def _failure(entry: _Running, error: BaseException) -> worker_pb2.FailTaskRequest:
        if entry.abandoned:
            # Not the task's fault: another attempt (on another worker) may finish it.
            return entry.ctx.failure(
                "WorkerStopped", "the worker stopped before the handler did", retryable=True
            )
        return entry.ctx.failure_from(error)

    async def _invoke(self, entry: _Running, handler: Handler) -> Any:
        loop = asyncio.get_running_loop()
        if inspect.iscoroutinefunction(handler):
            entry.is_async = True
            entry.handler = asyncio.ensure_future(handler(entry.ctx))
        else:
            entry.handler = loop.run_in_executor(self._executor, handler, entry.ctx)
        if entry.ctx.cancelled.is_set() and entry.is_async:
            entry.handler.cancel()
        result = await entry.handler
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _heartbeat(self, entry: _Running) -> None:
        while True:
            interval = entry.lease_seconds / 3
            if self._heartbeat_interval is not None:
                interval = min(interval, self._heartbeat_interval)
            await asyncio.sleep(max(interval, 0.05))
            stream = self._stream
            if stream is None or not stream.open:
                continue
            beat = worker_pb2.ExtendLeaseRequest(name=entry.ctx.name, lease_id=entry.ctx.lease_id)
            if self.lease_duration is not None:
                beat.lease_duration.CopyFrom(req.duration(self.lease_duration))
            progress = entry.ctx.take_progress()
            if progress is not None:
                beat.progress.CopyFrom(progress)
            stream.send(worker_pb2.ConnectRequest(heartbeat=beat))

    def _cancel(self, entry: _Running) -> None:
        if entry.ctx.cancelled.is_set():
            return
        _log.info("task %s: cancel requested", entry.ctx.name)
        entry.ctx.cancelled.set()
        if entry.is_async and entry.handler is not None:
            entry.handler.cancel()

    def _abandon(self, entry: _Running) -> None:
        """Gives up on a handler after the grace period; a sync one's thread runs on."""
        entry.abandoned = True
        entry.ctx.cancelled.set()
        if entry.handler is not None:
            entry.handler.cancel()
        elif entry.runner is not None:
            entry.runner.cancel()

    # Reports.

    def _report(self, entry: _Running, message: worker_pb2.ConnectRequest) -> None:
        self._running.pop(entry.key, None)
        stream = self._stream
        if stream is not None and stream.open and stream.generation == entry.generation:
            self._unacked[entry.key] = message
            stream.send(message)
            return
        # The slot this task held on the open stream's window is free again.
        if stream is not None and stream.open and not self._stop_requested_set():
            stream.grant(1)
        self._report_unary(message)

    def _on_ack(self, ack: worker_pb2.ReportAck) -> None:
        message = self._unacked.pop((ack.name, ack.lease_id), None)
        self._notify_settled()
        if ack.status.code == grpc.StatusCode.OK.value[0]:
            return
        _log.warning("report on %s refused: %s", ack.name, ack.status.message)
        # A result the server cannot store (too large, say) still ends the attempt.
        if (
            message is not None
            and message.WhichOneof("message") == "complete"
            and ack.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        ):
            failure = worker_pb2.FailTaskRequest(
                name=ack.name,
                lease_id=ack.lease_id,
                error=task_pb2.TaskError(type="InvalidResult", message=ack.status.message),
                retryable=False,
            )
            self._report_unary(worker_pb2.ConnectRequest(fail=failure))

    def _report_unary(self, message: worker_pb2.ConnectRequest) -> None:
        task = asyncio.create_task(self._send_unary(message))
        self._unary_reports.add(task)
        task.add_done_callback(self._unary_done)

    def _unary_done(self, task: asyncio.Task[None]) -> None:
        self._unary_reports.discard(task)
        self._notify_settled()

    def _notify_settled(self) -> None:
        if self._settled is not None:
            self._settled.set()

    async def _send_unary(self, message: worker_pb2.ConnectRequest) -> None:
        assert self._aio is not None
        failures = 0
        while True:
            try:
                if message.WhichOneof("message") == "complete":
                    await self._aio.workers.CompleteTask(message.complete)
                else:
                    await self._aio.workers.FailTask(message.fail)
                return
            except ConveyorError as error:
                code = error.code()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    # A stale lease (the task moved on while we were away) is expected.
                    stale = code == grpc.StatusCode.FAILED_PRECONDITION
                    level = logging.INFO if stale else logging.WARNING
                    _log.log(level, "report on %s dropped: %s", self._task_of(message), error)
                    return
            failures += 1
            await asyncio.sleep(random.uniform(0, min(5.0, 0.1 * 2**failures)))

    @staticmethod
    def _task_of(message: worker_pb2.ConnectRequest) -> str:
        return message.complete.name or message.fail.name

    # Stopping.

    async def _drain_on_stop(self) -> None:
        assert self._stop_requested is not None and self._loop is not None
        await self._stop_requested.wait()
        _log.info("worker %s draining for up to %.1f s", self.name, self._grace)
        stream = self._stream
        if stream is not None and stream.open:
            stream.grant(-stream.window)
        deadline = self._loop.time() + self._grace
        await self._wait_running(deadline)
        for entry in list(self._running.values()):
            self._abandon(entry)
        await self._wait_running(self._loop.time() + REPORT_DEADLINE)
        await self._wait_reports(self._loop.time() + REPORT_DEADLINE)
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

    async def _wait_running(self, deadline: float) -> None:
        assert self._loop is not None
        while self._running and self._loop.time() < deadline:
            runners = [e.runner for e in self._running.values() if e.runner is not None]
            await asyncio.wait(
                runners,
                timeout=deadline - self._loop.time(),
                return_when=asyncio.FIRST_COMPLETED,
            )

    async def _wait_reports(self, deadline: float) -> None:
        assert self._loop is not None
        assert self._settled is not None
        while (self._unacked or self._unary_reports) and self._loop.time() < deadline:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), deadline - self._loop.time())

    async def _abandon_all(self) -> None:
        """After the stream loop ended (stopped or refused): cancel what still runs."""
        for entry in list(self._running.values()):
            if entry.runner is not None:
                entry.runner.cancel()
        runners = [e.runner for e in self._running.values() if e.runner is not None]
        if runners:
            await asyncio.wait(runners, timeout=REPORT_DEADLINE)
        for task in list(self._unary_reports):
            task.cancel()
        if self._unary_reports:
            await asyncio.wait(list(self._unary_reports), timeout=1.0)
