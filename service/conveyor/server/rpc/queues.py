"""QueueService: ListQueues, GetQueue, UpdateQueue, PauseQueue, ResumeQueue."""

from __future__ import annotations

from typing import Any

import grpc

from conveyor.server.domain.queues import Queues, settings_message
from conveyor.server.render.convert import duration, timestamp
from conveyor.server.rpc import principal
from conveyor.server.store.queues import QueueRow
from conveyor.v1 import queue_pb2, queue_pb2_grpc

__all__ = ["QueueServicer", "queue_message"]

Context = grpc.aio.ServicerContext[Any, Any]


def queue_message(row: QueueRow, purge_confirm_token: str) -> queue_pb2.Queue:
    message = settings_message(row)
    # The read-only rest; the settings come from the one place that lists them.
    message.MergeFrom(
        queue_pb2.Queue(
            name=row.name,
            paused=row.paused,
            stats=queue_pb2.QueueStats(
                queued=row.queued,
                scheduled=row.scheduled,
                running=row.running,
                awaiting_approval=row.awaiting_approval,
                oldest_queued_age=duration(row.oldest_queued_age),
                succeeded_last_hour=row.succeeded_last_hour,
                failed_last_hour=row.failed_last_hour,
            ),
            purge_confirm_token=purge_confirm_token,
            pause_reason=row.pause_reason,
            create_time=timestamp(row.create_time),
            update_time=timestamp(row.update_time),
        )
    )
    return message


class QueueServicer(queue_pb2_grpc.QueueServiceServicer):
    def __init__(self, queues: Queues) -> None:
        self._queues = queues

    def _message(self, row: QueueRow) -> queue_pb2.Queue:
        return queue_message(row, self._queues.purge_token(row))

    async def ListQueues(
        self, request: queue_pb2.ListQueuesRequest, context: Context
    ) -> queue_pb2.ListQueuesResponse:
        rows, token = await self._queues.list_page(
            request.parent, request.page_size, request.page_token
        )
        return queue_pb2.ListQueuesResponse(
            queues=[self._message(r) for r in rows], next_page_token=token
        )

    async def GetQueue(
        self, request: queue_pb2.GetQueueRequest, context: Context
    ) -> queue_pb2.Queue:
        return self._message(await self._queues.get(request.name))

    async def UpdateQueue(
        self, request: queue_pb2.UpdateQueueRequest, context: Context
    ) -> queue_pb2.Queue:
        row = await self._queues.update(
            request.queue, request.update_mask.paths, principal.current()
        )
        return self._message(row)

    async def PauseQueue(
        self, request: queue_pb2.PauseQueueRequest, context: Context
    ) -> queue_pb2.Queue:
        return self._message(
            await self._queues.pause(request.name, request.reason, principal.current())
        )

    async def ResumeQueue(
        self, request: queue_pb2.ResumeQueueRequest, context: Context
    ) -> queue_pb2.Queue:
        return self._message(await self._queues.resume(request.name, principal.current()))
