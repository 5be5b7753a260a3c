"""ScheduleService rules for the schedule resource: create, read, list, update, delete
and preview. State changes are in schedule_states.py, firing in schedule_firing.py."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import names, paging, request_ids, schedule_spec, update_mask
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.schedule_rows import (
    Clock,
    append_event,
    dst_policy,
    enum_name,
    locked,
    record_change,
    row_from,
    schedule_kind,
    spec_of,
    utc_now,
    writable,
)
from conveyor.server.errors import AlreadyExists, InvalidArgument, NotFound, Violations
from conveyor.server.render.schedules import next_fire_time, schedule_message
from conveyor.server.store import event_log
from conveyor.server.store import schedules as schedule_store
from conveyor.server.store.schedules import RunRow, ScheduleRow
from conveyor.v1 import enums_pb2, schedule_pb2

MAX_PREVIEW = 100
DEFAULT_PREVIEW = 10
UPDATABLE = (
    "title",
    "description",
    "spec",
    "task_template",
    "overlap_policy",
    "catchup_window",
    "jitter",
    "dst_policy",
)


class Schedules:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        clock: Clock = utc_now,
        server_key: bytes = b"",
    ) -> None:
        self._pool = pool
        self._server_key = server_key
        self._clock = clock

    async def create(
        self,
        parent: str,
        schedule_id: str,
        message: schedule_pb2.Schedule,
        created_by: str,
        principal: Principal | None = None,
        request_id: str = "",
        request_hash: str = "",
    ) -> ScheduleRow:
        project = names.parse(parent, "parent").project
        if schedule_id:
            names.check_id(schedule_id, "schedule_id")
        else:
            schedule_id = "s-" + secrets.token_hex(6)
        v = Violations()
        request_ids.check(v, request_id)
        v.raise_if_any()
        now = self._clock()
        row = row_from(project, schedule_id, message, created_by, now)
        async with self._pool.connection() as conn, conn.transaction():
            earlier = await request_ids.claim(
                conn, project, "CreateSchedule", request_id, request_hash
            )
            if earlier is not None:
                found = await schedule_store.get(conn, project, earlier.rsplit("/", 1)[-1])
                if found is None:
                    raise NotFound(f"{earlier} no longer exists", metadata={"resource": earlier})
                return found
            if row.kind == schedule_spec.EVENT:
                # Only events appended from now on fire it, never the history.
                row = replace(row, event_cursor=await event_log.max_id(conn, project))
            created = await schedule_store.insert(conn, row)
            if created is None:
                raise AlreadyExists(f"{row.name} already exists", metadata={"resource": row.name})
            if row.event_cursor:
                await schedule_store.set_event_cursor(conn, project, schedule_id, row.event_cursor)
            await append_event(conn, created, "schedule.created")
            await request_ids.made(conn, project, "CreateSchedule", request_id, created.name)
            await record_change(
                conn,
                self._server_key,
                principal,
                enums_pb2.COMMAND_VERB_CREATE_SCHEDULE,
                created,
                {
                    "kind": created.kind,
                    "expression": created.expression,
                    "timezone": created.timezone,
                },
            )
        return created

    async def update(
        self,
        message: schedule_pb2.Schedule,
        mask: Sequence[str],
        principal: Principal | None = None,
    ) -> ScheduleRow:
        """Changes the fields in the mask (AIP-134, see update_mask.py), nested ones such
        as spec.expression or task_template.priority included; the merged schedule is
        validated as a whole."""
        name = names.parse(message.name, "schedule.name", "schedules")
        resolved = update_mask.resolve(mask, message, UPDATABLE, "schedule")
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            current = await locked(conn, name)
            writable(current)
            proposed = schedule_message(current)
            resolved.merge(message, proposed)
            merged = row_from(name.project, name.id, proposed, current.created_by, now)
            merged = replace(
                merged,
                state=current.state,
                notes=current.notes,
                snooze_until=current.snooze_until,
                snooze_reason=current.snooze_reason,
                next_run_time=current.next_run_time,
                create_time=current.create_time,
            )
            if "spec" in resolved or "dst_policy" in resolved:
                # Only a new timing moves the next fire (from the create time's anchor).
                merged = replace(
                    merged,
                    next_run_time=spec_of(merged).next_after(
                        max(now, current.snooze_until or now), merged.dst_policy
                    ),
                )
            updated = await schedule_store.update(conn, merged, now)
            await append_event(conn, updated, "schedule.updated")
            await record_change(
                conn,
                self._server_key,
                principal,
                enums_pb2.COMMAND_VERB_UPDATE_SCHEDULE,
                updated,
                {"update_mask": list(resolved.paths)},
            )
        return updated

    async def delete(self, name: str, principal: Principal | None = None) -> None:
        parsed = names.parse(name, "name", "schedules")
        async with self._pool.connection() as conn, conn.transaction():
            current = await locked(conn, parsed)
            await schedule_store.delete(conn, parsed.project, parsed.id)
            await append_event(conn, current, "schedule.deleted")
            await record_change(
                conn, self._server_key, principal, enums_pb2.COMMAND_VERB_DELETE_SCHEDULE, current
            )

    async def get(self, name: str) -> tuple[ScheduleRow, list[RunRow]]:
        parsed = names.parse(name, "name", "schedules")
        async with self._pool.connection() as conn:
            row = await schedule_store.get(conn, parsed.project, parsed.id)
            if row is None:
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            return row, await schedule_store.recent_runs(conn, parsed.project, parsed.id)

    async def list_page(
        self,
        parent: str,
        filter: schedule_pb2.ScheduleFilter,
        size: int,
        token: str,
        *,
        me: str = "",
    ) -> tuple[list[ScheduleRow], str]:
        """A page of schedules; `me` is the calling key, which `created_by: "me"` names."""
        created_by = me if filter.created_by == "me" and me else filter.created_by
        project = names.parse(parent, "parent").project
        labels = dict(filter.labels)
        v = Violations()
        for label, label_value in labels.items():
            # PostgreSQL jsonb cannot hold NUL (as TaskFilter.labels).
            if "\x00" in label or "\x00" in label_value:
                v.add(f"filter.labels[{label}]", "must not contain NUL characters")
        v.raise_if_any()
        limit = paging.page_size(size)
        after = str(paging.decode_token(token, ("id",))["id"]) if token else ""
        async with self._pool.connection() as conn:
            rows = await schedule_store.list_page(
                conn,
                project=project,
                after=after,
                limit=limit + 1,
                states=[
                    enum_name(enums_pb2.ScheduleState, s, "SCHEDULE_STATE_") for s in filter.states
                ],
                kinds=[schedule_kind(k) for k in filter.kinds],
                created_by=created_by,
                labels=labels,
            )
        next_token = paging.encode_token({"id": rows[limit - 1].id}) if len(rows) > limit else ""
        return rows[:limit], next_token

    async def preview(
        self,
        name: str,
        parent: str,
        proposed: schedule_pb2.Schedule | None,
        count: int,
        start: datetime | None,
    ) -> list[datetime]:
        if count == 0:
            count = DEFAULT_PREVIEW
        if not 1 <= count <= MAX_PREVIEW:
            raise InvalidArgument.of("count", f"must be between 1 and {MAX_PREVIEW}")
        now = start or self._clock()
        if name:
            parsed = names.parse(name, "name", "schedules")
            async with self._pool.connection() as conn:
                row = await schedule_store.get(conn, parsed.project, parsed.id)
            if row is None:
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            if row.state == "CANCELLED":
                return []
            times = spec_of(row).preview(max(now, row.snooze_until or now), count, row.dst_policy)
            first = next_fire_time(row)
            if first is not None and first >= now and first not in times[:1]:
                # An occurrence due during the snooze fires when the snooze ends.
                times = [first, *times][:count]
            return times
        if proposed is None or not proposed.HasField("spec"):
            raise InvalidArgument.of("schedule.spec", "is required with parent (or give name)")
        names.parse(parent, "parent")
        spec = schedule_spec.parse(
            schedule_kind(proposed.spec.kind) or "?",
            proposed.spec.expression,
            proposed.spec.timezone,
            anchor=now,
        )
        return spec.preview(now, count, dst_policy(proposed.dst_policy))
