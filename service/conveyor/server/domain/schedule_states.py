"""Schedule state changes: pause, resume, cancel and snooze."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import names, validate
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.schedule_rows import (
    Clock,
    append_event,
    locked,
    record_change,
    spec_of,
    utc_now,
    writable,
)
from conveyor.server.errors import Violations
from conveyor.server.store import schedules as schedule_store
from conveyor.server.store.schedules import ScheduleRow
from conveyor.v1 import enums_pb2

MAX_SNOOZE = timedelta(days=7)


class ScheduleStates:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        clock: Clock = utc_now,
        server_key: bytes = b"",
    ) -> None:
        self._pool = pool
        self._server_key = server_key
        self._clock = clock

    async def pause(self, name: str, notes: str, principal: Principal | None = None) -> ScheduleRow:
        validate_notes = Violations()
        validate.text(validate_notes, notes, "notes", 2000)
        validate_notes.raise_if_any()
        return await self._set_state(
            name,
            "PAUSED",
            "schedule.paused",
            notes=notes,
            principal=principal,
            verb=enums_pb2.COMMAND_VERB_PAUSE_SCHEDULE,
        )

    async def resume(self, name: str, principal: Principal | None = None) -> ScheduleRow:
        return await self._set_state(
            name,
            "ACTIVE",
            "schedule.resumed",
            notes="",
            principal=principal,
            verb=enums_pb2.COMMAND_VERB_RESUME_SCHEDULE,
        )

    async def cancel(self, name: str, principal: Principal | None = None) -> ScheduleRow:
        return await self._set_state(
            name,
            "CANCELLED",
            "schedule.cancelled",
            notes=None,
            principal=principal,
            verb=enums_pb2.COMMAND_VERB_CANCEL_SCHEDULE,
        )

    async def snooze(
        self, name: str, delay: timedelta, reason: str, principal: Principal | None = None
    ) -> ScheduleRow:
        v = Violations()
        if delay <= timedelta(0) or delay > MAX_SNOOZE:
            v.add("delay", "must be more than 0 and at most 7 days")
        validate.text(v, reason, "reason", 2000)
        v.raise_if_any()
        parsed = names.parse(name, "name", "schedules")
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            current = await locked(conn, parsed)
            writable(current)
            until = now + delay
            # The occurrence due during the snooze is not lost: it fires when it ends.
            snoozed = replace(current, snooze_until=until, snooze_reason=reason)
            updated = await schedule_store.update(conn, snoozed, now)
            await append_event(
                conn, updated, "schedule.snoozed", {"until": until.isoformat(), "reason": reason}
            )
            await record_change(
                conn,
                self._server_key,
                principal,
                enums_pb2.COMMAND_VERB_SNOOZE_SCHEDULE,
                updated,
                {"delay_seconds": delay.total_seconds(), "reason": reason},
            )
        return updated

    async def _set_state(
        self,
        name: str,
        state: str,
        event: str,
        *,
        notes: str | None,
        principal: Principal | None,
        verb: int,
    ) -> ScheduleRow:
        parsed = names.parse(name, "name", "schedules")
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            current = await locked(conn, parsed)
            writable(current)
            next_run = current.next_run_time
            if state == "ACTIVE" and current.state == "PAUSED":
                # Fires from the next occurrence on; what came due while paused is skipped.
                next_run = spec_of(current).next_after(now, current.dst_policy)
            changed = replace(
                current,
                state=state,
                notes=current.notes if notes is None else notes,
                next_run_time=None if state == "CANCELLED" else next_run,
            )
            updated = await schedule_store.update(conn, changed, now)
            await append_event(conn, updated, event)
            await record_change(
                conn, self._server_key, principal, verb, updated, {"notes": notes} if notes else {}
            )
        return updated
