"""What a handler receives (TaskContext) and the exceptions that steer its outcome."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from conveyor.client._json import from_value, to_struct, to_value
from conveyor.client._task_logs import LogBuffer, log_line
from conveyor.v1 import task_pb2, worker_pb2

TRACEBACK_LIMIT = 16 * 1024


class PermanentError(Exception):
    """Raise it (or a subclass) from a handler to fail the task without a retry.

    Any other exception fails the attempt as retryable: the task is retried while
    its retry_policy has attempts left.
    """


class TaskCancelled(Exception):
    """Raised by `TaskContext.raise_if_cancelled()` once CancelTask was called.

    Whatever a handler raises after a cancel was requested is reported as a
    non-retryable `Cancelled` failure, and the server ends the task INTERRUPTED.
    """


class TaskContext:
    """What a handler gets: the task, its input as plain JSON, and ways to report.

        @task("email.send")
        def send(ctx: TaskContext) -> dict[str, Any]:
            ctx.report_progress({"step": "rendering"})
            ctx.log("rendered", template="welcome", bytes=2048)
            ...
            ctx.set_summary("sent to 3 recipients")
            return {"message_id": "..."}

    The return value (any JSON) becomes the task's result. `cancelled` is set when
    CancelTask is called while the task runs; a sync handler should check it (or call
    `raise_if_cancelled()`) at safe points; an async handler is also cancelled with
    asyncio.CancelledError. The methods are safe to call from the handler's thread.
    """

    def __init__(self, lease: task_pb2.Lease, worker: str) -> None:
        task = lease.task
        self.task = task
        """The Task as it was leased."""
        self.lease_id = lease.lease_id
        self.name = task.name
        self.kind = task.kind
        self.input: Any = from_value(task.input)
        """The task's input as Python JSON (None when it has none)."""
        self.attempt = task.attempt
        """1 for the first attempt."""
        self.labels = dict(task.labels)
        self.worker = worker
        """This worker's id."""
        self.resume_token = task.resume_token
        """The token the task was created with (or the one set since); "" to start fresh."""
        self.summary = ""
        self.logs = LogBuffer()
        """Lines logged (and output captured) and not sent yet."""
        self._progress: struct_pb2.Struct | None = None
        self._lock = threading.Lock()
        self._cancel = task.cancel_requested
        self._cancelled: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when CancelTask was called on the running task."""
        # Made on first use: most handlers never look, and an Event is several objects
        # (a Condition, its lock's methods, a deque) for every task a worker runs.
        event = self._cancelled
        if event is None:
            with self._lock:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                    if self._cancel:
                        self._cancelled.set()
                event = self._cancelled
        return event

    @property
    def cancel_requested(self) -> bool:
        # `cancelled` may have been set by whoever holds it, not only by the worker.
        event = self._cancelled
        return self._cancel or (event is not None and event.is_set())

    def _set_cancelled(self) -> bool:
        """Sets `cancelled` (the worker's side); False when it was set already."""
        with self._lock:
            if self.cancel_requested:
                return False
            self._cancel = True
            event = self._cancelled
        if event is not None:
            event.set()
        return True

    def raise_if_cancelled(self) -> None:
        """Raises TaskCancelled once a cancel was requested."""
        if self.cancel_requested:
            raise TaskCancelled(f"{self.name} was cancelled")

    def report_progress(self, progress: Mapping[str, Any]) -> None:
        """Keeps progress (a JSON object) on the attempt; sent with the next heartbeat."""
        struct = to_struct(progress)
        with self._lock:
            self._progress = struct

    def log(self, message: str, *, level: str = "info", **fields: Any) -> None:
        """Appends a line to the task's log (ListTaskLogs, WatchTaskLogs, `conveyor tasks
        logs`), with `fields` (JSON values) beside it; level is debug, info, warning or
        error. Lines are sent in batches, every fraction of a second and before the
        report; the server keeps the newest (by default 10,000 lines or 1 MiB)."""
        self.logs.add(log_line(message, level=level, fields=fields))

    def set_summary(self, summary: str) -> None:
        """Short text for people, stored on the task with the result."""
        self.summary = summary

    def set_resume_token(self, token: str) -> None:
        """A token to continue from later, stored on the task when it completes."""
        self.resume_token = token

    def take_progress(self) -> struct_pb2.Struct | None:
        """The progress reported since the last call, if any."""
        with self._lock:
            progress, self._progress = self._progress, None
        return progress

    # Reports.

    def completion(self, result: Any) -> worker_pb2.CompleteTaskRequest:
        """The report of a handler that returned `result`; TypeError if it is not JSON."""
        request = worker_pb2.CompleteTaskRequest(
            name=self.name,
            lease_id=self.lease_id,
            summary=self.summary,
            resume_token=self.resume_token,
        )
        if result is not None:
            request.result.CopyFrom(to_value(result))
        return request

    def failure(
        self, error_type: str, message: str, *, retryable: bool, trace: str = ""
    ) -> worker_pb2.FailTaskRequest:
        error = task_pb2.TaskError(type=error_type, message=message, retryable=retryable)
        if trace:
            error.details.update({"traceback": trace[-TRACEBACK_LIMIT:]})
        return worker_pb2.FailTaskRequest(
            name=self.name, lease_id=self.lease_id, error=error, retryable=retryable
        )

    def failure_from(self, error: BaseException) -> worker_pb2.FailTaskRequest:
        """The report of a handler that raised `error`."""
        trace = "".join(traceback.format_exception(error))
        if self.cancel_requested:
            return self.failure("Cancelled", str(error), retryable=False, trace=trace)
        return self.failure(
            type(error).__name__,
            str(error),
            retryable=not isinstance(error, PermanentError),
            trace=trace,
        )
