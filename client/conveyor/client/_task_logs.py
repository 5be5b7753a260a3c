"""A running task's log lines in the Worker SDK: buffered, then sent in batches.

`ctx.log(message, **fields)` and, when the Worker captures output, what the handler
writes to stdout and stderr go into the task's LogBuffer (safe from any thread). The
task's runner ships the buffer every FLUSH_INTERVAL, and once more before its report:
on the Connect stream as a TaskLogBatch (not answered; the server fences each item by
its lease), or with AppendTaskLogs when the task came on a stream that has closed.

Capture redirects sys.stdout and sys.stderr once per process to a proxy that writes to
the buffer of the task whose handler is running in the current context (a context
variable set around each handler: a sync handler's thread, an async handler's task),
and to the real stream everywhere else, so concurrent handlers never mix their output.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from conveyor.client._json import fill_struct
from conveyor.v1 import enums_pb2, queue_pb2, task_service_pb2, worker_pb2

__all__ = [
    "FLUSH_INTERVAL",
    "LogBuffer",
    "capturing",
    "log_line",
    "queue_log_bounds",
    "stream_message",
]

FLUSH_INTERVAL = 0.5
"""Seconds between two shipments of a task's lines. Each shipment costs the server a
message, a statement and a lock of the attempt whatever it carries: a task logging
1,000 lines a second sends two of 500 (it sent five of 200 at 0.2 s), and a live tail
still sees the lines within a second."""
MAX_LINES = 1000
"""Lines per TaskLogBatch item (the server's limit per append)."""
MAX_MESSAGE_CHARS = 16 * 1024
"""Longer messages are cut: with its fields a line must stay under 64 KiB of UTF-8."""
MAX_FIELDS_BYTES = 32 * 1024
MAX_BUFFERED = 100_000
"""Lines a task may hold unsent (a server that stopped answering); older ones go."""

_LEVELS = {
    "debug": enums_pb2.TASK_LOG_LEVEL_DEBUG,
    "info": enums_pb2.TASK_LOG_LEVEL_INFO,
    "warning": enums_pb2.TASK_LOG_LEVEL_WARNING,
    "error": enums_pb2.TASK_LOG_LEVEL_ERROR,
}


def log_line(
    message: str,
    *,
    level: str = "info",
    stream: enums_pb2.TaskLogStream.ValueType = enums_pb2.TASK_LOG_STREAM_LOG,
    fields: Mapping[str, Any] | None = None,
) -> task_service_pb2.TaskLogLine:
    """One line, stamped now; ValueError for an unknown level."""
    try:
        severity = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"level must be one of {', '.join(_LEVELS)}, not {level!r}") from None
    text = str(message).replace("\x00", "")[:MAX_MESSAGE_CHARS]
    line = task_service_pb2.TaskLogLine(message=text, level=severity, stream=stream)
    # Set in place: Timestamp.GetCurrentTime costs several times as much, once a line.
    stamp = line.time
    stamp.seconds, stamp.nanos = divmod(time.time_ns(), 1_000_000_000)
    if fields:
        struct = line.fields
        try:
            fill_struct(struct, fields)
        except (TypeError, ValueError):
            # Not JSON: shown as text rather than lost.
            struct.Clear()
            fill_struct(struct, {str(k): repr(v) for k, v in fields.items()})
        if struct.ByteSize() > MAX_FIELDS_BYTES:
            struct.Clear()
            fill_struct(struct, {"fields_dropped": f"over {MAX_FIELDS_BYTES} bytes"})
    return line


class LogBuffer:
    """A task's lines not sent yet, and the unfinished last line of each output stream."""

    def __init__(self) -> None:
        self._lines: list[task_service_pb2.TaskLogLine] = []
        self._partial: dict[enums_pb2.TaskLogStream.ValueType, str] = {}
        self._lock = threading.Lock()
        self.on_first: Callable[[], None] | None = None
        """Called (from the writing thread) when a line arrives in an empty buffer: the
        runner then ships it soon, and sleeps while nothing is logged."""

    def add(self, line: task_service_pb2.TaskLogLine) -> None:
        with self._lock:
            first = not self._lines
            self._lines.append(line)
            if len(self._lines) > MAX_BUFFERED:
                del self._lines[: len(self._lines) - MAX_BUFFERED]
        if first and self.on_first is not None:
            self.on_first()

    def __bool__(self) -> bool:
        return bool(self._lines)

    def write(self, stream: enums_pb2.TaskLogStream.ValueType, text: str) -> None:
        """Output text: each complete line becomes a log line."""
        with self._lock:
            pending = self._partial.pop(stream, "") + text
            *complete, rest = pending.split("\n")
            if rest:
                self._partial[stream] = rest
        for part in complete:
            self.add(log_line(part, stream=stream))

    def end_output(self) -> None:
        """The handler ended: an unfinished last line of output is a line too."""
        with self._lock:
            partial, self._partial = self._partial, {}
        for stream, text in partial.items():
            self.add(log_line(text, stream=stream))

    def take(self) -> list[task_service_pb2.TaskLogLine]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def batches(self, name: str, lease_id: str) -> Iterator[task_service_pb2.AppendTaskLogsRequest]:
        """The lines not sent yet as appends of at most MAX_LINES lines."""
        lines = self.take()
        for start in range(0, len(lines), MAX_LINES):
            yield task_service_pb2.AppendTaskLogsRequest(
                name=name, lease_id=lease_id, lines=lines[start : start + MAX_LINES]
            )


def stream_message(append: task_service_pb2.AppendTaskLogsRequest) -> worker_pb2.ConnectRequest:
    return worker_pb2.ConnectRequest(logs=worker_pb2.TaskLogBatch(appends=[append]))


_CURRENT: contextvars.ContextVar[LogBuffer | None] = contextvars.ContextVar(
    "conveyor_task_output", default=None
)


class _Redirect:
    """Stands in for sys.stdout or sys.stderr: a running handler's writes go to its
    task's buffer, everyone else's to the stream it replaced."""

    def __init__(self, real: TextIO, stream: enums_pb2.TaskLogStream.ValueType) -> None:
        self._real = real
        self._stream = stream

    def write(self, text: str) -> int:
        buffer = _CURRENT.get()
        if buffer is None:
            return self._real.write(text)
        buffer.write(self._stream, text)
        return len(text)

    def flush(self) -> None:
        if _CURRENT.get() is None:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_install_lock = threading.Lock()


def _install() -> None:
    """Puts the proxies in place (again, if something swapped the streams since)."""
    with _install_lock:
        if not isinstance(sys.stdout, _Redirect):
            sys.stdout = _Redirect(sys.stdout, enums_pb2.TASK_LOG_STREAM_STDOUT)
        if not isinstance(sys.stderr, _Redirect):
            sys.stderr = _Redirect(sys.stderr, enums_pb2.TASK_LOG_STREAM_STDERR)


@contextlib.contextmanager
def capturing(buffer: LogBuffer) -> Iterator[None]:
    """While inside (in this context only), stdout and stderr go to `buffer`."""
    _install()
    token = _CURRENT.set(buffer)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def queue_log_bounds(queue: queue_pb2.Queue, bounds: tuple[int | None, int | None]) -> list[str]:
    """Sets UpdateQueue's max_log_bytes and max_log_lines that are not None (0: back to
    the default); returns their mask paths."""
    paths = []
    max_bytes, max_lines = bounds
    if max_bytes is not None:
        queue.max_log_bytes = max_bytes
        paths.append("max_log_bytes")
    if max_lines is not None:
        queue.max_log_lines = max_lines
        paths.append("max_log_lines")
    return paths
