"""TaskService.ExportTasks: the export as a stream of google.api.HttpBody chunks.

Only ExportTasks is defined here; the registry serves the other TaskService methods
from their own servicer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2

from conveyor.server.domain.export import Exporter
from conveyor.server.render.tasks import task_message
from conveyor.server.rpc import principal
from conveyor.server.store.db import Pool
from conveyor.v1 import task_service_pb2

__all__ = ["ExportServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class ExportServicer:
    """Defines only ExportTasks (the generated base class would make every other
    TaskService method abstract here)."""

    def __init__(self, pool: Pool) -> None:
        self._exporter = Exporter(pool, task_message)

    async def ExportTasks(
        self, request: task_service_pb2.ExportTasksRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        # The content type rides on the first chunk only, as HttpBody streams do.
        first = True
        async for content_type, data in self._exporter.export(
            request.parent,
            request.filter,
            request.format,
            list(request.fields),
            request.view,
            me=principal.current().key_name,
        ):
            yield httpbody_pb2.HttpBody(content_type=content_type if first else "", data=data)
            first = False
