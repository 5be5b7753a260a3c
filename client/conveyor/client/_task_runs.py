"""One task a Worker holds: running its handler, and the report that ends it.

Sync handlers run in the worker's thread pool, async ones on the loop. The outcome
becomes a report: the return value as the result, or the exception as the error,
retryable unless it is a PermanentError (or the worker abandoned the handler).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.client import _requests as req
from conveyor.client import _tracing
from conveyor.client._context import TaskContext
from conveyor.client._registry import Handler
from conveyor.client._requests import Seconds
from conveyor.client._stream import Stream
from conveyor.v1 import task_pb2, worker_pb2

_log = logging.getLogger("conveyor.worker")

DEFAULT_LEASE = 30.0


@dataclass(eq=False)
class TaskRun:
    """A task this worker holds: its context, runner and the stream it came on."""

    ctx: TaskContext
    generation: int
    lease_seconds: float
    runner: asyncio.Task[None] | None = None
    handler: asyncio.Future[Any] | None = None
    is_async: bool = False
    abandoned: bool = False
    traceparent: str = ""
    """The trace context of the task's creator (Lease.traceparent)."""
    key: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.ctx.name, self.ctx.lease_id)

    @classmethod
    def of(
        cls, lease: task_pb2.Lease, worker_id: str, generation: int, override: Seconds | None
    ) -> TaskRun:
        """The run of a pushed lease; `override` is the worker's lease_duration."""
        lease_seconds = DEFAULT_LEASE
        if override is not None:
            lease_seconds = req.seconds(override)
        elif lease.task.HasField("lease_duration"):
            lease_seconds = lease.task.lease_duration.ToTimedelta().total_seconds() or DEFAULT_LEASE
        run = cls(TaskContext(lease, worker_id), generation, lease_seconds)
        run.traceparent = lease.traceparent
        return run

    async def heartbeats(
        self,
        stream: Callable[[], Stream | None],
        interval: Callable[[], float | None],
        override: Seconds | None,
    ) -> None:
        """Sends a heartbeat on the open stream every third of the lease (or the Welcome's
        interval, when shorter) until cancelled."""
        while True:
            seconds = self.lease_seconds / 3
            welcome = interval()
            if welcome is not None:
                seconds = min(seconds, welcome)
            await asyncio.sleep(max(seconds, 0.05))
            current = stream()
            if current is not None and current.open:
                current.send(self.heartbeat(override))

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
    ) -> worker_pb2.ConnectRequest:
        """Runs the handler (in a span, when tracing: see _traced); returns the report
        of its outcome."""
        ctx = self.ctx
        if handler is None:
            failure = ctx.failure(
                "UnknownKind",
                f"worker {ctx.worker} has no handler for kind {ctx.kind!r}",
                retryable=False,
            )
            return worker_pb2.ConnectRequest(fail=failure)
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
            return worker_pb2.ConnectRequest(fail=self._failure(error))
        except Exception as error:
            failure = self._failure(error)
            outcome = "failed, will retry" if failure.retryable else "failed"
            self._log_end(started, outcome, error)
            return worker_pb2.ConnectRequest(fail=failure)
        try:
            report = worker_pb2.ConnectRequest(complete=ctx.completion(result))
        except TypeError as error:
            # The same code would return the same thing again: no retry.
            failure = ctx.failure("TypeError", f"the result is not JSON: {error}", retryable=False)
            self._log_end(started, "failed: the result is not JSON")
            return worker_pb2.ConnectRequest(fail=failure)
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
        loop = asyncio.get_running_loop()
        if inspect.iscoroutinefunction(handler):
            self.is_async = True
            self.handler = asyncio.ensure_future(handler(self.ctx))
        elif carry_context:
            # A thread does not inherit context variables: the span must come along.
            run = functools.partial(contextvars.copy_context().run, handler, self.ctx)
            self.handler = loop.run_in_executor(executor, run)
        else:
            self.handler = loop.run_in_executor(executor, handler, self.ctx)
        if self.ctx.cancelled.is_set() and self.is_async:
            self.handler.cancel()
        result = await self.handler
        if inspect.isawaitable(result):
            result = await result
        return result

    def on_heartbeat_answer(self, beat: worker_pb2.ExtendLeaseResponse) -> None:
        if beat.cancel_requested:
            if not beat.HasField("lease_expire_time"):
                # Not extended: the lease is gone and the task moved on without us.
                _log.warning("task %s: lease lost; stopping its handler", beat.name)
            self.cancel()

    def cancel(self) -> None:
        """Sets ctx.cancelled, and cancels an async handler."""
        if self.ctx.cancelled.is_set():
            return
        _log.info("task %s: cancel requested", self.ctx.name)
        self.ctx.cancelled.set()
        if self.is_async and self.handler is not None:
            self.handler.cancel()

    def abandon(self) -> None:
        """Gives up on a handler after the grace period; a sync one's thread runs on."""
        self.abandoned = True
        self.ctx.cancelled.set()
        if self.handler is not None:
            self.handler.cancel()
        elif self.runner is not None:
            self.runner.cancel()


async def wait_until_done(running: dict[tuple[str, str], TaskRun], deadline: float) -> None:
    """Returns when no task runs (each removes itself when reported), or at `deadline`."""
    loop = asyncio.get_running_loop()
    while running and loop.time() < deadline:
        runners = [e.runner for e in running.values() if e.runner is not None]
        await asyncio.wait(
            runners, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
        )
