"""Task log methods of the clients: list a task's lines, follow them live, append some.

    for line in client.watch_task_logs("0190...", attempt=0):
        print(line.seq, line.message)

A watch follows one attempt (the current one, or the first to start, when `attempt` is
0) and ends when that attempt ends. When the stream breaks (UNAVAILABLE: the replica went
away) it reopens it after the last line received, up to `max_reconnects` times in a row.
Workers written with the SDK log with `ctx.log`; `append_task_logs` is for workers of
your own (it needs the task's lease).
"""

# The async methods take `timeout` as the gRPC deadline of each call, as the sync ones do.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator

import grpc

from conveyor.client import _requests as req
from conveyor.client._task_logs import log_line
from conveyor.client.errors import from_rpc_error
from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

__all__ = ["AsyncTaskLogMethods", "TaskLogMethods"]

Line = task_service_pb2.TaskLogLine
RECONNECT_DELAY = 0.5


def _append_request(
    name: str, lease_id: str, lines: Iterable[str | Line]
) -> task_service_pb2.AppendTaskLogsRequest:
    return task_service_pb2.AppendTaskLogsRequest(
        name=name,
        lease_id=lease_id,
        lines=[log_line(x) if isinstance(x, str) else x for x in lines],
    )


class _Cursor:
    """Where a watch is: the attempt it follows and the last seq it received."""

    def __init__(self, name: str, attempt: int, after_seq: int) -> None:
        self.name, self.attempt, self.after_seq = name, attempt, after_seq

    def request(self) -> task_service_pb2.WatchTaskLogsRequest:
        return task_service_pb2.WatchTaskLogsRequest(
            name=self.name, attempt=self.attempt, after_seq=self.after_seq
        )

    def saw(self, line: Line) -> None:
        self.attempt, self.after_seq = line.attempt, line.seq


def _resumable(error: grpc.RpcError, failures: int, max_reconnects: int) -> bool:
    code = error.code() if callable(getattr(error, "code", None)) else None
    return code == grpc.StatusCode.UNAVAILABLE and failures <= max_reconnects


class TaskLogMethods:
    """TaskService log methods of Client."""

    tasks: task_service_pb2_grpc.TaskServiceStub
    project: str

    def list_task_logs(
        self,
        name: str,
        *,
        attempt: int = 0,
        page_size: int = 0,
        newest_first: bool = False,
        timeout: float | None = None,
    ) -> Iterator[Line]:
        """The task's log lines, oldest first (by attempt, then seq; newest first with
        newest_first), a page at a time; only those of `attempt` when it is not 0."""
        token = ""
        while True:
            page = self.tasks.ListTaskLogs(
                task_service_pb2.ListTaskLogsRequest(
                    name=req.child(self.project, "tasks", name),
                    attempt=attempt,
                    page_size=page_size,
                    page_token=token,
                    order_by="seq desc" if newest_first else "",
                ),
                timeout=timeout,
            )
            yield from page.lines
            token = page.next_page_token
            if not token:
                return

    def watch_task_logs(
        self, name: str, *, attempt: int = 0, after_seq: int = 0, max_reconnects: int = 5
    ) -> Iterator[Line]:
        """The attempt's lines after after_seq, then live ones, until the attempt ends."""
        cursor = _Cursor(req.child(self.project, "tasks", name), attempt, after_seq)
        failures = 0
        while True:
            call = self.tasks.WatchTaskLogs(cursor.request())
            try:
                for line in call:
                    failures = 0
                    cursor.saw(line)
                    yield line
                return
            except grpc.RpcError as error:
                failures += 1
                if not _resumable(error, failures, max_reconnects):
                    raise from_rpc_error(error) from None
                time.sleep(RECONNECT_DELAY)
            finally:
                call.cancel()

    def append_task_logs(
        self, name: str, lease_id: str, lines: Iterable[str | Line], *, timeout: float | None = None
    ) -> task_service_pb2.AppendTaskLogsResponse:
        """Appends lines (text, or TaskLogLine messages) to the running attempt that
        `lease_id` leased (worker role); FailedPreconditionError when the lease is stale."""
        request = _append_request(req.child(self.project, "tasks", name), lease_id, lines)
        result: task_service_pb2.AppendTaskLogsResponse = self.tasks.AppendTaskLogs(
            request, timeout=timeout
        )
        return result


class AsyncTaskLogMethods:
    """TaskService log methods of AsyncClient."""

    tasks: task_service_pb2_grpc.TaskServiceAsyncStub
    project: str

    async def list_task_logs(
        self,
        name: str,
        *,
        attempt: int = 0,
        page_size: int = 0,
        newest_first: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[Line]:
        """The task's log lines, oldest first (by attempt, then seq; newest first with
        newest_first), a page at a time; only those of `attempt` when it is not 0."""
        token = ""
        while True:
            page = await self.tasks.ListTaskLogs(
                task_service_pb2.ListTaskLogsRequest(
                    name=req.child(self.project, "tasks", name),
                    attempt=attempt,
                    page_size=page_size,
                    page_token=token,
                    order_by="seq desc" if newest_first else "",
                ),
                timeout=timeout,
            )
            for line in page.lines:
                yield line
            token = page.next_page_token
            if not token:
                return

    async def watch_task_logs(
        self, name: str, *, attempt: int = 0, after_seq: int = 0, max_reconnects: int = 5
    ) -> AsyncIterator[Line]:
        """The attempt's lines after after_seq, then live ones, until the attempt ends."""
        cursor = _Cursor(req.child(self.project, "tasks", name), attempt, after_seq)
        failures = 0
        while True:
            call = self.tasks.WatchTaskLogs(cursor.request())
            try:
                async for line in call:
                    failures = 0
                    cursor.saw(line)
                    yield line
                return
            except grpc.RpcError as error:
                failures += 1
                if not _resumable(error, failures, max_reconnects):
                    raise from_rpc_error(error) from None
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                call.cancel()

    async def append_task_logs(
        self, name: str, lease_id: str, lines: Iterable[str | Line], *, timeout: float | None = None
    ) -> task_service_pb2.AppendTaskLogsResponse:
        """Appends lines (text, or TaskLogLine messages) to the running attempt that
        `lease_id` leased (worker role); FailedPreconditionError when the lease is stale."""
        request = _append_request(req.child(self.project, "tasks", name), lease_id, lines)
        result: task_service_pb2.AppendTaskLogsResponse = await self.tasks.AppendTaskLogs(
            request, timeout=timeout
        )
        return result
