"""One task a Worker holds: running its handler, and the report that ends it.

Sync handlers run in the worker's thread pool, async ones on the loop. The outcome
becomes a report: the return value as the result, or the exception as the error,
retryable unless it is a PermanentError (or the worker abandoned the handler).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from conveyor.client import _requests as req
from conveyor.client import _tracing
from conveyor.client._async_client import AsyncClient
from conveyor.client._context import TaskContext
from conveyor.client._registry import Handler
from conveyor.client._reports import Report
from conveyor.client._requests import Seconds
from conveyor.client._stream import Stream
from conveyor.client._task_logs import FLUSH_INTERVAL, LogBuffer, capturing, stream_message
from conveyor.client._thread_results import ThreadResults
from conveyor.client.errors import ConveyorError
from conveyor.v1 import task_pb2, task_service_pb2, worker_pb2

_log = logging.getLogger("conveyor.worker")

DEFAULT_LEASE = 30.0
_appending: set[asyncio.Task[None]] = set()
"""AppendTaskLogs calls under way (held here so they are not collected midway)."""


@dataclass(eq=False, slots=True)
class TaskRun:
    """A task this worker holds: its context, runner and the stream it came on."""

    ctx: TaskContext
    generation: int
    lease_seconds: float
    runner: asyncio.Task[None] | None = None
    handler: asyncio.Future[Any] | None = None
    """A sync handler's future (its thread); an async handler runs in `runner`."""
    is_async: bool = False
    abandoned: bool = False
    traceparent: str = ""
    """The trace context of the task's creator (Lease.traceparent)."""
    stream_of: Callable[[], Stream | None] = lambda: None
    """The worker's open stream, if any (where log lines go)."""
    client: AsyncClient | None = None
    """For log lines of a task whose stream has closed (AppendTaskLogs)."""
    capture: bool = False
    """The handler's stdout and stderr go to the task's log."""
    key: tuple[str, str] = field(init=False)
    next_beat: float = 0.0
    """Loop time of the next heartbeat (_heartbeats.py)."""
    beat_every: float = 0.0
    ended: bool = False
    """The handler is done: its last lines are shipped with the report."""
    _ship_timer: asyncio.TimerHandle | None = None
    threads: ThreadResults | None = None
    """Where a sync handler's outcome comes back from its thread (the worker's)."""
    _work: concurrent.futures.Future[Any] | None = None
    _in_handler: bool = False
    """An async handler runs (in the runner's task)."""
    _handler_cancels: int = 0
    _loop: asyncio.AbstractEventLoop = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.ctx.name, self.ctx.lease_id)

    @classmethod
    def of(
        cls,
        lease: task_pb2.Lease,
        worker_id: str,
        generation: int,
        override: Seconds | None,
    ) -> TaskRun:
        """The run of a pushed lease (on the running loop, which ships its log lines);
        `override` is the worker's lease_duration."""
        lease_seconds = DEFAULT_LEASE
        if override is not None:
            lease_seconds = req.seconds(override)
        else:
            # Duration.ToTimedelta costs several times this, once a task.
            duration = lease.task.lease_duration
            lease_seconds = duration.seconds + duration.nanos / 1e9 or DEFAULT_LEASE
        run = cls(TaskContext(lease, worker_id), generation, lease_seconds)
        run.traceparent = lease.traceparent
        run.watch_logs(asyncio.get_running_loop())
        return run

    def watch_logs(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ships the log lines FLUSH_INTERVAL after the first one arrives in the empty
        buffer (from any thread): the lines that follow in that time come along."""
        self._loop = loop
        self.ctx.logs.on_first = self._on_first_line
        if self.ctx.logs:
            self._ship_soon()

    def _on_first_line(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self._loop.call_soon_threadsafe(self._ship_soon)

    def _ship_soon(self) -> None:
        if self._ship_timer is None and not self.ended:
            self._ship_timer = self._loop.call_later(FLUSH_INTERVAL, self._ship_due)

    def _ship_due(self) -> None:
        self._ship_timer = None
        self.ship_logs()

    def ship_logs(self) -> None:
        """Sends the lines logged since the last call: on the stream the task came on
        while it is open, else with AppendTaskLogs."""
        stream = self.stream_of()
        for append in self.ctx.logs.batches(self.ctx.name, self.ctx.lease_id):
            if stream is not None and stream.open and stream.generation == self.generation:
                stream.send(stream_message(append))
            elif self.client is not None:
                task = asyncio.ensure_future(self._append(self.client, append))
                _appending.add(task)
                task.add_done_callback(_appending.discard)

    @staticmethod
    async def _append(client: AsyncClient, append: task_service_pb2.AppendTaskLogsRequest) -> None:
        try:
            await client.tasks.AppendTaskLogs(append)
        except ConveyorError as error:
            # A stale lease (the task moved on) or a server gone: the lines are lost.
            _log.info("task %s: %d log lines not sent: %s", append.name, len(append.lines), error)

    def heartbeat(self, override: Seconds | None) -> worker_pb2.ConnectRequest:
        """The heartbeat that extends the lease and carries the progress since the last."""
        beat = worker_pb2.ExtendLeaseRequest(name=self.ctx.name, lease_id=self.ctx.lease_id)
        if override is not None:
            beat.lease_duration.CopyFrom(req.duration(override))
        progress = self.ctx.take_progress()
        if progress is not None:
            beat.progress.CopyFrom(progress)
        return worker_pb2.ConnectRequest(heartbeat=beat)

    async def execute(
        self,
        handler: Handler | None,
        executor: concurrent.futures.ThreadPoolExecutor | None,
        tracer_provider: Any = None,
    ) -> Report:
        """Runs the handler (in a span, when tracing: see _traced); returns the report
        of its outcome, once its last log lines are sent (so they come first)."""
        try:
            return await self._execute(handler, executor, tracer_provider)
        finally:
            self.ended = True
            # No cycle left through the buffer: the run goes with its last reference,
            # not with the garbage collector's next pass (which scans everything).
            self.ctx.logs.on_first = None
            if self._ship_timer is not None:
                self._ship_timer.cancel()
                self._ship_timer = None
            self.ctx.logs.end_output()
            self.ship_logs()

    async def _execute(
        self,
        handler: Handler | None,
        executor: concurrent.futures.ThreadPoolExecutor | None,
        tracer_provider: Any,
    ) -> Report:
        ctx = self.ctx
        if handler is None:
            failure = ctx.failure(
                "UnknownKind",
                f"worker {ctx.worker} has no handler for kind {ctx.kind!r}",
                retryable=False,
            )
            return failure
        tracer = _tracing.worker_tracer(tracer_provider)
        started = time.monotonic()
        _log.info("task %s (%s) attempt %d started", ctx.name, ctx.kind, ctx.attempt)
        try:
            if tracer is None:
                result = await self._invoke(handler, executor)
            else:
                result = await self._traced(tracer, handler, executor)
        except asyncio.CancelledError as error:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the runner itself is being cancelled: nothing to report
            self._log_end(started, "cancelled")
            return self._failure(error)
        except Exception as error:
            failure = self._failure(error)
            outcome = "failed, will retry" if failure.retryable else "failed"
            self._log_end(started, outcome, error)
            return failure
        try:
            report: Report = ctx.completion(result)
        except TypeError as error:
            # The same code would return the same thing again: no retry.
            failure = ctx.failure("TypeError", f"the result is not JSON: {error}", retryable=False)
            self._log_end(started, "failed: the result is not JSON")
            return failure
        self._log_end(started, "succeeded")
        return report

    def _log_end(self, started: float, outcome: str, error: BaseException | None = None) -> None:
        """One line per finished handler: kind, id, duration, outcome; and a failing
        handler's exception with its traceback."""
        ctx = self.ctx
        seconds = time.monotonic() - started
        if error is None:
            _log.info("task %s (%s) %s in %.3f s", ctx.name, ctx.kind, outcome, seconds)
        else:
            _log.error(
                "task %s (%s) %s in %.3f s: %s: %s",
                ctx.name,
                ctx.kind,
                outcome,
                seconds,
                type(error).__name__,
                error,
                exc_info=error,
            )

    def _failure(self, error: BaseException) -> worker_pb2.FailTaskRequest:
        if self.abandoned:
            # Not the task's fault: another attempt (on another worker) may finish it.
            return self.ctx.failure(
                "WorkerStopped", "the worker stopped before the handler did", retryable=True
            )
        return self.ctx.failure_from(error)

    async def _traced(
        self, tracer: Any, handler: Handler, executor: concurrent.futures.ThreadPoolExecutor | None
    ) -> Any:
        """Runs the handler in a CONSUMER span whose parent is the creator's traceparent
        (a new trace without one); what the handler raises is recorded on the span."""
        from opentelemetry.trace import SpanKind

        ctx = self.ctx
        attributes = {
            "messaging.system": "conveyor",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": ctx.task.queue,
            "messaging.message.id": ctx.name.rsplit("/", 1)[-1],
            "conveyor.task.name": ctx.name,
            "conveyor.task.kind": ctx.kind,
            "conveyor.task.attempt": ctx.attempt,
            "conveyor.worker": ctx.worker,
        }
        with tracer.start_as_current_span(
            f"process {ctx.kind}",
            context=_tracing.parent_context(self.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ):
            return await self._invoke(handler, executor, carry_context=True)

    async def _invoke(
        self,
        handler: Handler,
        executor: concurrent.futures.ThreadPoolExecutor | None,
        *,
        carry_context: bool = False,
    ) -> Any:
        output = capturing(self.ctx.logs) if self.capture else contextlib.nullcontext()
        if inspect.iscoroutinefunction(handler):
            self.is_async = True
            with output:  # set in the runner's own context, which the handler runs in
                result = await self._await_handler(handler(self.ctx))
        else:
            call: Callable[[], Any] = functools.partial(handler, self.ctx)
            if self.capture:
                call = functools.partial(_captured, self.ctx.logs, call)
            if carry_context:
                # A thread does not inherit context variables: the span must come along.
                call = functools.partial(contextvars.copy_context().run, call)
            if self.threads is not None and executor is not None:
                self.handler, self._work = self.threads.run(executor, call)
            else:
                self.handler = asyncio.get_running_loop().run_in_executor(executor, call)
            result = await self.handler
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _await_handler(self, handler: Coroutine[Any, Any, Any]) -> Any:
        """Runs an async handler in the runner's task: a task of its own would cost every
        task a second one. Cancelling the handler cancels the runner while it is in
        here (_interrupt); those cancels are counted and taken back on the way out, so
        the runner still tells them from its own cancellation (cancelling() > 0)."""
        if self.ctx.cancel_requested:
            handler.close()  # cancelled before it started: it does not run at all
            raise asyncio.CancelledError
        self._in_handler = True
        try:
            return await handler
        finally:
            self._in_handler = False
            if self._handler_cancels:
                runner = asyncio.current_task()
                assert runner is not None
                for _ in range(self._handler_cancels):
                    runner.uncancel()
                self._handler_cancels = 0

    def on_heartbeat_answer(self, beat: worker_pb2.ExtendLeaseResponse) -> None:
        if beat.cancel_requested:
            if not beat.HasField("lease_expire_time"):
                # Not extended: the lease is gone and the task moved on without us.
                _log.warning("task %s: lease lost; stopping its handler", beat.name)
            self.cancel()

    def cancel(self) -> None:
        """Sets ctx.cancelled, and cancels an async handler."""
        if not self.ctx._set_cancelled():
            return
        _log.info("task %s: cancel requested", self.ctx.name)
        if self._in_handler:
            self._interrupt()

    def abandon(self) -> None:
        """Gives up on a handler after the grace period; a sync one's thread runs on."""
        self.abandoned = True
        self.ctx._set_cancelled()
        if self._in_handler or self.handler is not None:
            self._interrupt()
        elif self.runner is not None and not self.is_async:
            self.runner.cancel()  # the handler has not started

    def _interrupt(self) -> None:
        """Cancels the handler: an async one where it awaits, a sync one's future (its
        thread runs on; the runner stops waiting for it)."""
        if self._in_handler:
            assert self.runner is not None
            self._handler_cancels += 1
            self.runner.cancel()
        elif self.handler is not None:
            self.handler.cancel()
            if self._work is not None:
                self._work.cancel()  # not started yet: it never will


def _captured(buffer: LogBuffer, call: Callable[[], Any]) -> Any:
    """Runs a sync handler in its thread with its stdout and stderr going to `buffer`."""
    with capturing(buffer):
        return call()


async def wait_until_done(running: dict[tuple[str, str], TaskRun], deadline: float) -> None:
    """Returns when no task runs (each removes itself when reported), or at `deadline`."""
    loop = asyncio.get_running_loop()
    while running and loop.time() < deadline:
        runners = [e.runner for e in running.values() if e.runner is not None]
        await asyncio.wait(
            runners, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
        )
