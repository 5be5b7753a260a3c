"""ScheduleService rules: validation, state changes, and firing an occurrence exactly once."""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from google.protobuf import json_format
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import audit, names, paging, schedule_spec, validate
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.errors import (
    AlreadyExists,
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Violations,
)
from conveyor.server.store import event_log
from conveyor.server.store import schedules as store
from conveyor.server.store.schedules import RunRow, ScheduleRow
from conveyor.v1 import enums_pb2, schedule_pb2

MAX_SNOOZE = timedelta(days=7)
MAX_PREVIEW = 100
DEFAULT_PREVIEW = 10
# An occurrence found late by less than this fires even with no catchup_window: the
# scheduler runs every second or so, and a replica restart takes a few.
LATE_GRACE = timedelta(minutes=1)
MAX_CATCHUP_SCAN = 10_000
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

Clock = Callable[[], datetime]


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


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


def _policy(value: int, default: str) -> str:
    if value == 0:
        return default
    return _enum_name(enums_pb2.OverlapPolicy, value, "OVERLAP_POLICY_")


def _dst(value: int) -> str:
    return "RUN_ONCE" if value == 0 else _enum_name(enums_pb2.DstPolicy, value, "DST_POLICY_")


def _kind(value: int) -> str:
    return "" if value == 0 else _enum_name(enums_pb2.ScheduleKind, value, "SCHEDULE_KIND_")


def _millis(duration: Any, field_path: str, v: Violations, limit: timedelta | None = None) -> int:
    delta: timedelta = duration.ToTimedelta()
    if delta < timedelta(0):
        v.add(field_path, "must not be negative")
    if limit is not None and delta > limit:
        v.add(field_path, f"must be at most {limit}")
    return int(delta.total_seconds() * 1000)


def _check_template(v: Violations, template: schedule_pb2.TaskTemplate, prefix: str) -> None:
    if not template.kind:
        v.add(f"{prefix}.kind", "is required")
    validate.text(v, template.kind, f"{prefix}.kind", 200)
    if template.queue and not names.ID_RE.match(template.queue):
        v.add(f"{prefix}.queue", names.ID_RULE)
    if not 0 <= template.priority <= 9:
        v.add(f"{prefix}.priority", "must be between 1 and 9 (0 means 5)")
    validate.labels(v, dict(template.labels), f"{prefix}.labels")
    validate.url(v, template.callback_url, f"{prefix}.callback_url")
    if template.input.ByteSize() > 1024 * 1024:
        v.add(f"{prefix}.input", "must be at most 1 MiB")


def occurrence_key(nominal: datetime) -> str:
    return nominal.astimezone(UTC).isoformat()


def spec_of(row: ScheduleRow) -> schedule_spec.Spec:
    return schedule_spec.Spec(
        row.kind, row.expression, schedule_spec.zone(row.timezone), row.create_time
    )


class Schedules:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        tasks: TaskFactory,
        clock: Clock = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        server_key: bytes = b"",
    ) -> None:
        self._pool = pool
        self._tasks = tasks
        self._server_key = server_key
        self._clock = clock
        self._rng = rng or random.Random()

    # Writes.

    def _row_from(
        self,
        project: str,
        schedule_id: str,
        message: schedule_pb2.Schedule,
        created_by: str,
        now: datetime,
    ) -> ScheduleRow:
        v = Violations()
        validate.text(v, message.title, "schedule.title", 200)
        validate.text(v, message.description, "schedule.description", 4000)
        kind = _kind(message.spec.kind)
        spec: schedule_spec.Spec | None = None
        if not message.HasField("spec"):
            v.add("schedule.spec", "is required")
        elif not kind:
            v.add("schedule.spec.kind", "must be CRON, RRULE, ONCE or EVENT")
        else:
            try:
                spec = schedule_spec.parse(
                    kind, message.spec.expression, message.spec.timezone, anchor=now
                )
            except InvalidArgument as error:
                v.items.extend(error.violations)
        if not message.HasField("task_template"):
            v.add("schedule.task_template", "is required")
        else:
            _check_template(v, message.task_template, "schedule.task_template")
        catchup = _millis(message.catchup_window, "schedule.catchup_window", v, timedelta(days=366))
        jitter = _millis(message.jitter, "schedule.jitter", v, timedelta(days=1))
        v.raise_if_any()
        assert spec is not None
        dst = _dst(message.dst_policy)
        return ScheduleRow(
            project=project,
            id=schedule_id,
            title=message.title,
            description=message.description,
            kind=kind,
            expression=spec.expression,
            timezone=message.spec.timezone or "UTC",
            task_template=json_format.MessageToDict(
                message.task_template, preserving_proto_field_name=True
            ),
            state="ACTIVE",
            notes="",
            created_by=created_by,
            overlap_policy=_policy(message.overlap_policy, "SKIP"),
            catchup_window_ms=catchup,
            jitter_ms=jitter,
            dst_policy=dst,
            next_run_time=spec.next_after(now, dst),
            last_run_time=None,
            snooze_until=None,
            snooze_reason="",
            run_count=0,
            missed_count=0,
            buffered_time=None,
            event_cursor=0,
            create_time=now,
            update_time=now,
        )

    async def create(
        self,
        parent: str,
        schedule_id: str,
        message: schedule_pb2.Schedule,
        created_by: str,
        principal: Principal | None = None,
    ) -> ScheduleRow:
        project = names.parse(parent, "parent").project
        if schedule_id:
            names.check_id(schedule_id, "schedule_id")
        else:
            schedule_id = "s-" + secrets.token_hex(6)
        now = self._clock()
        row = self._row_from(project, schedule_id, message, created_by, now)
        async with self._pool.connection() as conn, conn.transaction():
            if row.kind == schedule_spec.EVENT:
                # Only events appended from now on fire it, never the history.
                row = replace(row, event_cursor=await event_log.max_id(conn, project))
            created = await store.insert(conn, row)
            if created is None:
                raise AlreadyExists(f"{row.name} already exists", metadata={"resource": row.name})
            if row.event_cursor:
                await store.set_event_cursor(conn, project, schedule_id, row.event_cursor)
            await self._event(conn, created, "schedule.created")
            await self._audit(
                conn,
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
        name = names.parse(message.name, "schedule.name", "schedules")
        paths = list(mask) or list(UPDATABLE)
        v = Violations()
        for path in paths:
            if path.split(".")[0] not in UPDATABLE:
                v.add("update_mask", f"{path} is not one of {', '.join(UPDATABLE)}")
        v.raise_if_any()
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            current = await self._locked(conn, name)
            self._writable(current)
            proposed = _to_message(current)
            for path in {p.split(".")[0] for p in paths}:
                # A message field left unset keeps its value: spec and template are
                # required, and an empty duration is what "unset" means anyway.
                if path in _MESSAGE_FIELDS and not message.HasField(path):  # type: ignore[arg-type]
                    continue
                _copy_field(message, proposed, path)
            merged = self._row_from(name.project, name.id, proposed, current.created_by, now)
            merged = replace(
                merged,
                state=current.state,
                notes=current.notes,
                snooze_until=current.snooze_until,
                snooze_reason=current.snooze_reason,
                next_run_time=spec_of(merged).next_after(
                    max(now, current.snooze_until or now), merged.dst_policy
                ),
                create_time=current.create_time,
            )
            updated = await store.update(conn, merged, now)
            await self._event(conn, updated, "schedule.updated")
            await self._audit(
                conn,
                principal,
                enums_pb2.COMMAND_VERB_UPDATE_SCHEDULE,
                updated,
                {"update_mask": paths},
            )
        return updated

    async def delete(self, name: str, principal: Principal | None = None) -> None:
        parsed = names.parse(name, "name", "schedules")
        async with self._pool.connection() as conn, conn.transaction():
            current = await self._locked(conn, parsed)
            await store.delete(conn, parsed.project, parsed.id)
            await self._event(conn, current, "schedule.deleted")
            await self._audit(conn, principal, enums_pb2.COMMAND_VERB_DELETE_SCHEDULE, current)

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
            current = await self._locked(conn, parsed)
            self._writable(current)
            until = now + delay
            # The occurrence due during the snooze is not lost: it fires when it ends.
            snoozed = replace(current, snooze_until=until, snooze_reason=reason)
            updated = await store.update(conn, snoozed, now)
            await self._event(
                conn, updated, "schedule.snoozed", {"until": until.isoformat(), "reason": reason}
            )
            await self._audit(
                conn,
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
            current = await self._locked(conn, parsed)
            self._writable(current)
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
            updated = await store.update(conn, changed, now)
            await self._event(conn, updated, event)
            await self._audit(conn, principal, verb, updated, {"notes": notes} if notes else {})
        return updated

    # Reads.

    async def get(self, name: str) -> tuple[ScheduleRow, list[RunRow]]:
        parsed = names.parse(name, "name", "schedules")
        async with self._pool.connection() as conn:
            row = await store.get(conn, parsed.project, parsed.id)
            if row is None:
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            return row, await store.recent_runs(conn, parsed.project, parsed.id)

    async def list_page(
        self, parent: str, filter: schedule_pb2.ScheduleFilter, size: int, token: str
    ) -> tuple[list[ScheduleRow], str]:
        project = names.parse(parent, "parent").project
        limit = paging.page_size(size)
        after = str(paging.decode_token(token, ("id",))["id"]) if token else ""
        async with self._pool.connection() as conn:
            rows = await store.list_page(
                conn,
                project=project,
                after=after,
                limit=limit + 1,
                states=[
                    _enum_name(enums_pb2.ScheduleState, s, "SCHEDULE_STATE_") for s in filter.states
                ],
                kinds=[_kind(k) for k in filter.kinds],
                created_by=filter.created_by,
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
                row = await store.get(conn, parsed.project, parsed.id)
            if row is None:
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            if row.state == "CANCELLED":
                return []
            return spec_of(row).preview(max(now, row.snooze_until or now), count, row.dst_policy)
        if proposed is None or not proposed.HasField("spec"):
            raise InvalidArgument.of("schedule.spec", "is required with parent (or give name)")
        names.parse(parent, "parent")
        spec = schedule_spec.parse(
            _kind(proposed.spec.kind) or "?",
            proposed.spec.expression,
            proposed.spec.timezone,
            anchor=now,
        )
        return spec.preview(now, count, _dst(proposed.dst_policy))

    # Firing.

    async def run_now(
        self, name: str, overlap_override: int, principal: Principal | None = None
    ) -> uuid.UUID:
        parsed = names.parse(name, "name", "schedules")
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            row = await self._locked(conn, parsed)
            self._writable(row)
            policy = _policy(overlap_override, row.overlap_policy)
            task_id, note = await self.fire(
                conn, row, occurrence=f"manual:{uuid.uuid4()}", nominal=now, now=now, policy=policy
            )
            await store.after_fire(
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
                await self._audit(
                    conn,
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
        if not await store.insert_run(
            conn, row, occurrence=occurrence, nominal_time=nominal, now=now
        ):
            return None, "already fired"
        policy = policy or row.overlap_policy
        running = await store.active_task(conn, row)
        if running is not None and policy == "SKIP":
            await store.set_run_task(
                conn, row, occurrence, None, "skipped: the previous task is still running"
            )
            return None, "skipped: the previous task is still running"
        if running is not None and policy == "BUFFER_ONE":
            await store.set_run_task(conn, row, occurrence, None, "buffered")
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
            await store.set_run_task(conn, row, occurrence, None, note)
            await self._event(
                conn, row, "schedule.failed", {"occurrence": occurrence, "error": error.message}
            )
            return None, note
        await store.set_run_task(conn, row, occurrence, task_id, "")
        await self._event(
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
        if buffered is not None and await store.active_task(conn, row) is None:
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
                await self._event(
                    conn, row, "schedule.missed", {"missed": missed, "latest": latest.isoformat()}
                )
        await store.after_fire(
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
        for event in await store.events_after(conn, row.project, cursor, limit):
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
        await store.after_fire(
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

    # Helpers.

    async def _locked(self, conn: AsyncConnection[Any], name: names.Name) -> ScheduleRow:
        row = await store.get(conn, name.project, name.id, for_update=True)
        if row is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": str(name)})
        return row

    @staticmethod
    def _writable(row: ScheduleRow) -> None:
        if row.state == "CANCELLED":
            raise FailedPrecondition(
                f"{row.name} is cancelled and read-only",
                reason="SCHEDULE_CANCELLED",
                violations=[PreconditionViolation("STATE", row.name, "schedule is CANCELLED")],
            )

    async def _audit(
        self,
        conn: AsyncConnection[Any],
        principal: Principal | None,
        verb: int,
        row: ScheduleRow,
        args: dict[str, Any] | None = None,
    ) -> None:
        """Records the change in the project's audit chain (DESIGN.md: Command)."""
        if principal is not None:
            await audit.record(
                conn, self._server_key, principal, verb, row.name, args or {}, project=row.project
            )

    async def _event(
        self,
        conn: AsyncConnection[Any],
        row: ScheduleRow,
        type: str,
        data: dict[str, Any] | None = None,
    ) -> None:
        await event_log.append(conn, project=row.project, type=type, subject=row.name, data=data)


def _to_message(row: ScheduleRow) -> schedule_pb2.Schedule:
    message = schedule_pb2.Schedule(
        name=row.name,
        title=row.title,
        description=row.description,
        spec=schedule_pb2.ScheduleSpec(
            kind=enums_pb2.ScheduleKind.Value(f"SCHEDULE_KIND_{row.kind}"),
            expression=row.expression,
            timezone=row.timezone,
        ),
        overlap_policy=enums_pb2.OverlapPolicy.Value(f"OVERLAP_POLICY_{row.overlap_policy}"),
        dst_policy=enums_pb2.DstPolicy.Value(f"DST_POLICY_{row.dst_policy}"),
    )
    json_format.ParseDict(row.task_template, message.task_template)
    message.catchup_window.FromTimedelta(timedelta(milliseconds=row.catchup_window_ms))
    message.jitter.FromTimedelta(timedelta(milliseconds=row.jitter_ms))
    return message


_MESSAGE_FIELDS = ("spec", "task_template", "catchup_window", "jitter")


def _copy_field(source: schedule_pb2.Schedule, target: schedule_pb2.Schedule, path: str) -> None:
    if path in _MESSAGE_FIELDS:
        getattr(target, path).CopyFrom(getattr(source, path))
    else:
        setattr(target, path, getattr(source, path))
