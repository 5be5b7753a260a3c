"""TaskService's log methods: AppendTaskLogs, ListTaskLogs, WatchTaskLogs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from conveyor.server.domain.task_logs import TaskLogs, parse_append
from conveyor.server.render.convert import set_timestamp
from conveyor.server.store.task_logs import LogLineRow
from conveyor.v1 import enums_pb2, task_service_pb2

__all__ = ["TaskLogServicer", "line_message"]

Context = grpc.aio.ServicerContext[Any, Any]


def line_message(row: LogLineRow) -> task_service_pb2.TaskLogLine:
    line = task_service_pb2.TaskLogLine(
        attempt=row.attempt,
        seq=row.seq,
        stream=enums_pb2.TaskLogStream.Value(f"TASK_LOG_STREAM_{row.stream}"),
        level=enums_pb2.TaskLogLevel.Value(f"TASK_LOG_LEVEL_{row.level}"),
        message=row.message,
        dropped_count=row.dropped_count,
    )
    set_timestamp(line.time, row.time)
    if row.fields:
        line.fields.update(row.fields)
    return line


class TaskLogServicer:
    def __init__(self, logs: TaskLogs) -> None:
        self._logs = logs

    async def AppendTaskLogs(
        self, request: task_service_pb2.AppendTaskLogsRequest, context: Context
    ) -> task_service_pb2.AppendTaskLogsResponse:
        appended = await self._logs.append(parse_append(request))
        return task_service_pb2.AppendTaskLogsResponse(
            last_seq=appended.last_seq, dropped_count=appended.dropped
        )

    async def ListTaskLogs(
        self, request: task_service_pb2.ListTaskLogsRequest, context: Context
    ) -> task_service_pb2.ListTaskLogsResponse:
        rows, token = await self._logs.list_page(
            request.name, request.attempt, request.page_size, request.page_token, request.order_by
        )
        return task_service_pb2.ListTaskLogsResponse(
            lines=[line_message(r) for r in rows], next_page_token=token
        )

    async def WatchTaskLogs(
        self, request: task_service_pb2.WatchTaskLogsRequest, context: Context
    ) -> AsyncIterator[task_service_pb2.TaskLogLine]:
        stream = self._logs.watch(request.name, request.attempt, request.after_seq)
        try:
            async for rows in stream:
                for row in rows:
                    yield line_message(row)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
