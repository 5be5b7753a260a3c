"""Firing schedules: an occurrence through its overlap policy, exactly once; what is
due of a time-based schedule (catch-up, missed, buffered); the events an EVENT schedule
matches; and RunScheduleNow."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from google.protobuf import json_format
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import metrics, names
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.schedule_rows import (
    Clock,
    append_event,
    locked,
    occurrence_key,
    overlap_policy,
    record_change,
    spec_of,
    utc_now,
    writable,
)
from conveyor.server.domain.task_input import DEFAULT_QUEUE
from conveyor.server.errors import ConveyorError, FailedPrecondition, PreconditionViolation
from conveyor.server.store import schedules as schedule_store
from conveyor.server.store.schedules import ScheduleRow
from conveyor.v1 import enums_pb2, schedule_pb2

# An occurrence found late by less than this fires even with no catchup_window: the
# scheduler runs every second or so, and a replica restart takes a few.
LATE_GRACE = timedelta(minutes=1)
MAX_CATCHUP_SCAN = 10_000


class TaskFactory(Protocol):
    """Creates the task of one fire, in the caller's transaction; returns its id."""

    async def create_scheduled(
        self,
        conn: AsyncConnection[Any],
        *,
        project: str,
        template: schedule_pb2.TaskTemplate,
        schedule: str,
        schedule_time: datetime,
        occurrence: str,
    ) -> uuid.UUID: ...

    async def cancel_for_schedule(
        self, conn: AsyncConnection[Any], project: str, task_id: uuid.UUID
    ) -> None: ...


class ScheduleFiring:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        tasks: TaskFactory,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        server_key: bytes = b"",
    ) -> None:
        self._pool = pool
        self._tasks = tasks
        self._server_key = server_key
        self._clock = clock
        self._rng = rng or random.Random()

    async def run_now(
        self, name: str, overlap_override: int, principal: Principal | None = None
    ) -> uuid.UUID:
        parsed = names.parse(name, "name", "schedules")
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            row = await locked(conn, parsed)
            writable(row)
            policy = overlap_policy(overlap_override, row.overlap_policy)
            task_id, note = await self.fire(
                conn, row, occurrence=f"manual:{uuid.uuid4()}", nominal=now, now=now, policy=policy
            )
            await schedule_store.after_fire(
                conn,
                row,
                now=now,
                next_run_time=row.next_run_time,
                last_run_time=now if task_id else None,
                fired=1 if task_id else 0,
                missed=0,
                buffered_time=now if note == "buffered" else row.buffered_time,
            )
            if task_id is not None:
                await record_change(
                    conn,
                    self._server_key,
                    principal,
                    enums_pb2.COMMAND_VERB_RUN_SCHEDULE_NOW,
                    row,
                    {"overlap_policy": policy, "task": f"projects/{row.project}/tasks/{task_id}"},
                )
        if task_id is None:
            raise FailedPrecondition(
                f"the overlap policy {policy} did not start a task: {note}",
                reason="SCHEDULE_OVERLAP",
                violations=[PreconditionViolation("OVERLAP", name, note)],
            )
        return task_id

    async def fire(
        self,
        conn: AsyncConnection[Any],
        row: ScheduleRow,
        *,
        occurrence: str,
        nominal: datetime,
        now: datetime,
        policy: str | None = None,
    ) -> tuple[uuid.UUID | None, str]:
        """Fires one occurrence through the overlap policy; (task id or None, note).

        The run row's primary key is the occurrence, so a second fire of the same one
        (another replica, a retry after a crash) records nothing and creates nothing.
        """
        if not await schedule_store.insert_run(
            conn, row, occurrence=occurrence, nominal_time=nominal, now=now
        ):
            return None, "already fired"
        policy = policy or row.overlap_policy
        running = await schedule_store.active_task(conn, row)
        if running is not None and policy == "SKIP":
            await schedule_store.set_run_task(
                conn, row, occurrence, None, "skipped: the previous task is still running"
            )
            return None, "skipped: the previous task is still running"
        if running is not None and policy == "BUFFER_ONE":
            await schedule_store.set_run_task(conn, row, occurrence, None, "buffered")
            return None, "buffered"
        if running is not None and policy == "CANCEL_OTHER":
            await self._tasks.cancel_for_schedule(conn, row.project, running[0])
        jitter = (
            timedelta(milliseconds=self._rng.randint(0, row.jitter_ms))
            if row.jitter_ms
            else timedelta(0)
        )
        template = schedule_pb2.TaskTemplate()
        json_format.ParseDict(row.task_template, template)
        try:
            async with conn.transaction():  # a savepoint: a refused task leaves the run
                task_id = await self._tasks.create_scheduled(
                    conn,
                    project=row.project,
                    template=template,
                    schedule=row.name,
                    schedule_time=max(nominal, now) + jitter,
                    occurrence=occurrence,
                )
        except ConveyorError as error:
            # Recorded on the run and in the log; the schedule moves on rather than
            # retrying a template that cannot become a task every second.
            note = f"failed: {error.message}"
            await schedule_store.set_run_task(conn, row, occurrence, None, note)
            await append_event(
                conn, row, "schedule.failed", {"occurrence": occurrence, "error": error.message}
            )
            return None, note
        await schedule_store.set_run_task(conn, row, occurrence, task_id, "")
        metrics.schedule_fired(row.project, template.queue or DEFAULT_QUEUE, nominal, now)
        await append_event(
            conn,
            row,
            "schedule.fired",
            {"occurrence": occurrence, "task": f"projects/{row.project}/tasks/{task_id}"},
        )
        return task_id, ""

    async def fire_due(self, conn: AsyncConnection[Any], row: ScheduleRow, now: datetime) -> int:
        """Fires what is due of one locked time-based schedule; returns tasks created."""
        fired = 0
        last_run: datetime | None = None
        buffered = row.buffered_time
        if buffered is not None and await schedule_store.active_task(conn, row) is None:
            task_id, _ = await self.fire(
                conn,
                row,
                occurrence=f"buffered:{occurrence_key(buffered)}",
                nominal=buffered,
                now=now,
                policy="ALLOW_ALL",
            )
            fired += 1 if task_id else 0
            last_run = now
            buffered = None
        due: list[datetime] = []
        next_run = row.next_run_time
        snoozed = row.snooze_until is not None and row.snooze_until > now
        if next_run is not None and next_run <= now and not snoozed:
            spec = spec_of(row)
            due.append(next_run)
            for instant in spec.fire_times(next_run, row.dst_policy):
                if instant > now or len(due) >= MAX_CATCHUP_SCAN:
                    break
                due.append(instant)
            next_run = spec.next_after(now, row.dst_policy)
        missed = 0
        if due:
            latest = due[-1]
            window = max(timedelta(milliseconds=row.catchup_window_ms), LATE_GRACE)
            # Snoozed occurrences fire when the snooze ends; they are late on purpose.
            late_ok = row.snooze_until is not None and latest <= row.snooze_until
            missed = len(due) - 1
            if now - latest <= window or late_ok:
                task_id, note = await self.fire(
                    conn, row, occurrence=occurrence_key(latest), nominal=latest, now=now
                )
                if task_id is not None:
                    fired += 1
                    last_run = now
                if note == "buffered":
                    buffered = latest
            else:
                missed += 1
            if missed:
                await append_event(
                    conn, row, "schedule.missed", {"missed": missed, "latest": latest.isoformat()}
                )
        await schedule_store.after_fire(
            conn,
            row,
            now=now,
            next_run_time=next_run,
            last_run_time=last_run,
            fired=fired,
            missed=missed,
            buffered_time=buffered,
        )
        return fired

    async def fire_events(
        self, conn: AsyncConnection[Any], row: ScheduleRow, now: datetime, limit: int = 500
    ) -> int:
        """Fires a locked EVENT schedule once for each new matching event; returns tasks created."""
        spec = spec_of(row)
        cursor = row.event_cursor
        fired = 0
        for event in await schedule_store.events_after(conn, row.project, cursor, limit):
            if not event.safe:
                break  # a smaller id may still commit; look again next pass
            cursor = event.id
            # Its own tasks' events never fire it again (no feedback loops).
            if event.task_schedule == row.name or event.type.startswith("schedule."):
                continue
            if spec.matches_event(event.type):
                task_id, _ = await self.fire(
                    conn, row, occurrence=f"event:{event.id}", nominal=now, now=now
                )
                fired += 1 if task_id else 0
        await schedule_store.after_fire(
            conn,
            row,
            now=now,
            next_run_time=None,
            last_run_time=now if fired else None,
            fired=fired,
            missed=0,
            buffered_time=row.buffered_time,
            event_cursor=cursor,
        )
        return fired
