"""TaskService.ExportTasks: the export as a stream of google.api.HttpBody chunks.

Only ExportTasks is defined here; the registry serves the other TaskService methods
from their own servicer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.api import httpbody_pb2

from conveyor.server.domain.export import Exporter
from conveyor.server.domain.names import project_of
from conveyor.server.domain.redaction import Redactions, Rule
from conveyor.server.render.tasks import task_message
from conveyor.server.rpc import principal
from conveyor.server.store.db import Pool
from conveyor.server.store.task_rows import TaskRow
from conveyor.v1 import task_pb2, task_service_pb2

__all__ = ["ExportServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class ExportServicer:
    """Defines only ExportTasks (the generated base class would make every other
    TaskService method abstract here)."""

    def __init__(self, pool: Pool, redactions: Redactions | None = None) -> None:
        self._exporter = Exporter(pool, task_message)
        self._redactions = redactions

    async def ExportTasks(
        self, request: task_service_pb2.ExportTasksRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        # The content type rides on the first chunk only, as HttpBody streams do.
        first = True
        project = project_of(request.parent)
        rule = None
        if self._redactions is not None and project is not None:
            rule = await self._redactions.for_caller(principal.current(), project)
        async for content_type, data in self._exporter.export(
            request.parent,
            request.filter,
            request.format,
            list(request.fields),
            request.view,
            me=principal.current().key_name,
            to_message=None if rule is None else _redacting(rule),
        ):
            yield httpbody_pb2.HttpBody(content_type=content_type if first else "", data=data)
            first = False


def _redacting(rule: Rule) -> Callable[[TaskRow], task_pb2.Task]:
    """Renders a row as the caller may read it (domain/redaction.py)."""

    def to_message(row: TaskRow) -> task_pb2.Task:
        task = task_message(row)
        rule.redact_task(task)
        return task

    return to_message
