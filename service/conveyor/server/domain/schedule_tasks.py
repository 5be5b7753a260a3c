"""Creating and cancelling the tasks of schedule fires, inside the scheduler's transaction.

The task goes through the same validation and insert as CreateTask. Its request_id is
derived from the schedule and the occurrence, so the tasks table's unique index backs
the run table's: an occurrence cannot create two tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from conveyor.server import states
from conveyor.server.domain import task_dedupe, task_input
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.errors import FailedPrecondition
from conveyor.server.store import tasks as task_store
from conveyor.server.store.task_inserts import Outcome, insert_batch
from conveyor.server.tracing import Tracing
from conveyor.v1 import schedule_pb2, task_pb2


def template_task(template: schedule_pb2.TaskTemplate, schedule_time: datetime) -> task_pb2.Task:
    task = task_pb2.Task(
        queue=template.queue,
        kind=template.kind,
        priority=template.priority,
        labels=dict(template.labels),
        concurrency_key=template.concurrency_key,
        callback_url=template.callback_url,
    )
    if template.HasField("input"):
        task.input.CopyFrom(template.input)
    if template.HasField("retry_policy"):
        task.retry_policy.CopyFrom(template.retry_policy)
    if template.HasField("dedupe_policy"):
        task.dedupe_policy.CopyFrom(template.dedupe_policy)
    task.schedule_time.FromDatetime(schedule_time)
    return task


class ScheduledTasks:
    def __init__(self, ids: TaskIds | None = None, tracing: Tracing | None = None) -> None:
        self._ids = ids or TaskIds()
        self._tracing = tracing

    async def create_scheduled(
        self,
        conn: AsyncConnection[Any],
        *,
        project: str,
        template: schedule_pb2.TaskTemplate,
        schedule: str,
        schedule_time: datetime,
        occurrence: str,
    ) -> uuid.UUID:
        """Creates the task of one fire. With tracing on, the fire is a PRODUCER span (a
        child of RunScheduleNow's call when it is one) and the task's trace context."""
        with self._fire_span(schedule, occurrence, template) as traceparent:
            new = task_input.new_task(
                template_task(template, schedule_time),
                project=project,
                request_id=f"schedule:{schedule.rsplit('/', 1)[-1]}:{occurrence}",
                ids=self._ids,
                prefix="schedule.task_template.",
                schedule=schedule,
            )
            if traceparent:
                new = dataclasses.replace(new, traceparent=traceparent)
            if new.dedupe is not None:
                # A held key gives its holder as this occurrence's task (or, REJECT, an error).
                created = await task_dedupe.create(
                    conn, new, f"projects/{project}", "schedule.task_template."
                )
                task = created.existing if created.existing is not None else created.new
                assert task is not None
                return task.id
            (result,) = await insert_batch(conn, [new], upsert_queue=[True])
            if result.outcome is Outcome.CREATED:
                return new.id
            if result.outcome is Outcome.EXISTING and result.row is not None:
                return result.row.id
            raise FailedPrecondition(
                f"the task of {schedule} was not created: {result.outcome.value}"
            )

    @contextlib.contextmanager
    def _fire_span(
        self, schedule: str, occurrence: str, template: schedule_pb2.TaskTemplate
    ) -> Iterator[str | None]:
        """The fire's span, yielding its traceparent (None with tracing off)."""
        if self._tracing is None:
            yield None
            return
        attributes = {
            "conveyor.schedule.name": schedule,
            "conveyor.schedule.occurrence": occurrence,
            "conveyor.task.kind": template.kind,
            "messaging.system": "conveyor",
            "messaging.operation.type": "send",
            "messaging.destination.name": template.queue or "default",
        }
        with self._tracing.span("schedule fire", kind="PRODUCER", attributes=attributes):
            yield self._tracing.traceparent()

    async def cancel_for_schedule(
        self, conn: AsyncConnection[Any], project: str, task_id: uuid.UUID
    ) -> None:
        """CANCEL_OTHER: the previous task stops as CancelTask would stop it."""
        reason = "cancelled by its schedule's next fire (CANCEL_OTHER)"
        cancelled = await task_store.cancel(
            conn,
            project,
            task_id,
            reason=reason,
            sources=[s.value for s in states.sources("cancel")],
            event_type=states.EVENT_TYPES["cancel"],
        )
        if cancelled is None:
            await task_store.request_cancel(conn, project, task_id, reason=reason)
