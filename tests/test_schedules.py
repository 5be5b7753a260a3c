"""ScheduleService end to end: CRUD, validation, firing exactly once, overlap, catch-up,
snooze, cancel, events, and three replicas sharing one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, field_mask_pb2

from conveyor.client import (
    AsyncClient,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from conveyor.server.app import ConveyorServer
from conveyor.server.loops.scheduler import SchedulerLoop
from conveyor.server.services import default_hooks
from conveyor.server.settings import Settings
from conveyor.v1 import enums_pb2, schedule_pb2, task_service_pb2

PARENT = "projects/alpha"


def loop_of(server: ConveyorServer) -> SchedulerLoop:
    return next(loop for loop in server.context.loops if isinstance(loop, SchedulerLoop))


def cron(expression: str, **fields: Any) -> schedule_pb2.Schedule:
    return schedule_pb2.Schedule(
        spec=schedule_pb2.ScheduleSpec(kind=enums_pb2.SCHEDULE_KIND_CRON, expression=expression),
        task_template=schedule_pb2.TaskTemplate(kind="report.build", queue="reports"),
        **fields,
    )


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


async def create(
    client: AsyncClient, schedule_id: str, schedule: schedule_pb2.Schedule
) -> schedule_pb2.Schedule:
    return await client.schedules.CreateSchedule(
        schedule_pb2.CreateScheduleRequest(
            parent=PARENT, schedule_id=schedule_id, schedule=schedule
        )
    )


def tasks_of(database_url: str, schedule: str) -> list[tuple[str, datetime]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT state, schedule_time FROM tasks WHERE schedule = %s ORDER BY id", (schedule,)
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def test_create_get_list_update_delete(client: AsyncClient) -> None:
    created = await create(client, "nightly", cron("0 3 * * *", title="Nightly"))
    assert created.name == f"{PARENT}/schedules/nightly"
    assert created.state == enums_pb2.SCHEDULE_STATE_ACTIVE
    assert created.next_run_time.ToDatetime(tzinfo=UTC).hour == 3
    assert created.created_by.startswith("projects/alpha/apiKeys/")

    fetched = await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=created.name))
    assert fetched.task_template.kind == "report.build"
    await create(client, "hourly", cron("@hourly"))
    listed = await client.schedules.ListSchedules(
        schedule_pb2.ListSchedulesRequest(parent=PARENT, page_size=1)
    )
    assert [s.name for s in listed.schedules] == [f"{PARENT}/schedules/hourly"]
    assert listed.next_page_token

    updated = await client.schedules.UpdateSchedule(
        schedule_pb2.UpdateScheduleRequest(
            schedule=schedule_pb2.Schedule(
                name=created.name,
                title="ignored",
                spec=schedule_pb2.ScheduleSpec(
                    kind=enums_pb2.SCHEDULE_KIND_CRON,
                    expression="0 4 * * *",
                    timezone="Europe/Chisinau",
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["spec"]),
        )
    )
    assert (updated.title, updated.spec.timezone) == ("Nightly", "Europe/Chisinau")
    assert updated.next_run_time.ToDatetime(tzinfo=UTC).hour in (1, 2)  # 04:00 in Chisinau

    await client.schedules.DeleteSchedule(schedule_pb2.DeleteScheduleRequest(name=created.name))
    with pytest.raises(NotFoundError):
        await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=created.name))


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (cron("61 * * * *"), "schedule.spec.expression"),
        (
            cron("* * * * *").__class__(task_template=schedule_pb2.TaskTemplate(kind="x")),
            "schedule.spec",
        ),
        (
            schedule_pb2.Schedule(
                spec=schedule_pb2.ScheduleSpec(
                    kind=enums_pb2.SCHEDULE_KIND_CRON, expression="* * * * *", timezone="Mars/Base"
                ),
                task_template=schedule_pb2.TaskTemplate(kind="x"),
            ),
            "schedule.spec.timezone",
        ),
        (
            schedule_pb2.Schedule(
                spec=schedule_pb2.ScheduleSpec(
                    kind=enums_pb2.SCHEDULE_KIND_RRULE, expression="FREQ=NEVER"
                ),
                task_template=schedule_pb2.TaskTemplate(kind="x"),
            ),
            "schedule.spec.expression",
        ),
        (cron("* * * * *").__class__(spec=cron("* * * * *").spec), "schedule.task_template"),
        (
            schedule_pb2.Schedule(
                spec=cron("* * * * *").spec,
                task_template=schedule_pb2.TaskTemplate(kind="x", priority=12),
            ),
            "schedule.task_template.priority",
        ),
    ],
)
async def test_bad_schedules_name_the_field_and_write_nothing(
    client: AsyncClient, database_url: str, schedule: schedule_pb2.Schedule, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await create(client, "bad", schedule)
    assert field in [f for f, _ in caught.value.field_violations]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


async def test_preview_saved_and_proposed(client: AsyncClient) -> None:
    saved = await create(client, "daily", cron("0 12 * * *"))
    preview = await client.schedules.PreviewSchedule(
        schedule_pb2.PreviewScheduleRequest(name=saved.name, count=3)
    )
    times = [t.ToDatetime(tzinfo=UTC) for t in preview.fire_times]
    assert len(times) == 3 and all(t.hour == 12 for t in times)
    assert times[1] - times[0] == timedelta(days=1)
    proposed = await client.schedules.PreviewSchedule(
        schedule_pb2.PreviewScheduleRequest(parent=PARENT, schedule=cron("*/5 * * * *"), count=4)
    )
    assert len(proposed.fire_times) == 4
    with pytest.raises(InvalidArgumentError):
        await client.schedules.PreviewSchedule(
            schedule_pb2.PreviewScheduleRequest(name=saved.name, count=101)
        )


async def test_an_occurrence_fires_once_with_the_schedule_set(
    server: ConveyorServer, client: AsyncClient, database_url: str
) -> None:
    saved = await create(client, "minutely", cron("* * * * *"))
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    loop = loop_of(server)
    assert await loop.run_once(now=due + timedelta(seconds=1)) == 1
    assert await loop.run_once(now=due + timedelta(seconds=2)) == 0
    tasks = tasks_of(database_url, saved.name)
    assert len(tasks) == 1
    fetched = await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=saved.name))
    assert fetched.run_count == 1
    assert fetched.recent_runs[0].task.startswith(f"{PARENT}/tasks/")
    assert fetched.next_run_time.ToDatetime(tzinfo=UTC) == due + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("policy", "tasks_after_second_fire", "first_state"),
    [
        # The fires are in the future of the database clock, so their tasks wait SCHEDULED.
        (enums_pb2.OVERLAP_POLICY_SKIP, 1, "SCHEDULED"),
        (enums_pb2.OVERLAP_POLICY_ALLOW_ALL, 2, "SCHEDULED"),
        (enums_pb2.OVERLAP_POLICY_CANCEL_OTHER, 2, "CANCELLED"),
        (enums_pb2.OVERLAP_POLICY_BUFFER_ONE, 1, "SCHEDULED"),
    ],
)
async def test_overlap_policies(
    server: ConveyorServer,
    client: AsyncClient,
    database_url: str,
    policy: int,
    tasks_after_second_fire: int,
    first_state: str,
) -> None:
    # The first fire is the next minute boundary, and its task is SCHEDULED only while
    # that boundary is ahead of the database clock: not within seconds of it.
    if (left := 60 - datetime.now(UTC).second) < 5:
        await asyncio.sleep(left + 0.5)
    saved = await create(client, "ov", cron("* * * * *", overlap_policy=policy))
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    loop = loop_of(server)
    await loop.run_once(now=due)
    await loop.run_once(now=due + timedelta(minutes=1))
    tasks = tasks_of(database_url, saved.name)
    assert len(tasks) == tasks_after_second_fire
    assert tasks[0][0] == first_state
    if policy == enums_pb2.OVERLAP_POLICY_BUFFER_ONE:
        # The buffered fire runs once the previous task has ended, and only once.
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "UPDATE tasks SET state = 'SUCCEEDED', end_time = now() WHERE schedule = %s",
                (saved.name,),
            )
        await loop.run_once(now=due + timedelta(minutes=1, seconds=5))
        await loop.run_once(now=due + timedelta(minutes=1, seconds=6))
        assert len(tasks_of(database_url, saved.name)) == 2


async def test_run_now_goes_through_the_overlap_policy_unless_overridden(
    client: AsyncClient, database_url: str
) -> None:
    saved = await create(client, "manual", cron("0 0 1 1 *"))
    first = await client.schedules.RunScheduleNow(
        schedule_pb2.RunScheduleNowRequest(name=saved.name)
    )
    assert first.schedule == saved.name
    with pytest.raises(FailedPreconditionError):
        await client.schedules.RunScheduleNow(schedule_pb2.RunScheduleNowRequest(name=saved.name))
    second = await client.schedules.RunScheduleNow(
        schedule_pb2.RunScheduleNowRequest(
            name=saved.name, overlap_policy=enums_pb2.OVERLAP_POLICY_ALLOW_ALL
        )
    )
    assert second.name != first.name
    assert len(tasks_of(database_url, saved.name)) == 2


async def test_catch_up_fires_the_latest_occurrence_inside_the_window_and_counts_the_rest(
    server: ConveyorServer, client: AsyncClient, database_url: str
) -> None:
    window = duration_pb2.Duration(seconds=300)
    saved = await create(client, "catchup", cron("* * * * *", catchup_window=window))
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    # The service was down for 30 minutes.
    await loop_of(server).run_once(now=due + timedelta(minutes=30, seconds=10))
    tasks = tasks_of(database_url, saved.name)
    assert len(tasks) == 1
    fetched = await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=saved.name))
    assert fetched.missed_count == 30
    assert fetched.recent_runs[0].nominal_time.ToDatetime(tzinfo=UTC) == due + timedelta(minutes=30)


async def test_occurrences_older_than_the_window_are_missed_not_fired(
    server: ConveyorServer, client: AsyncClient, database_url: str
) -> None:
    saved = await create(client, "old", cron("0 * * * *"))
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    await loop_of(server).run_once(now=due + timedelta(minutes=30))
    assert tasks_of(database_url, saved.name) == []
    fetched = await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=saved.name))
    assert fetched.missed_count == 1


async def test_snooze_moves_the_next_fire_and_loses_nothing(
    server: ConveyorServer, client: AsyncClient, database_url: str
) -> None:
    saved = await create(client, "snoozy", cron("* * * * *"))
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    snoozed = await client.schedules.SnoozeSchedule(
        schedule_pb2.SnoozeScheduleRequest(
            name=saved.name, delay=duration_pb2.Duration(seconds=3600), reason="maintenance"
        )
    )
    assert snoozed.snooze_reason == "maintenance"
    until = snoozed.snooze_until.ToDatetime(tzinfo=UTC)
    loop = loop_of(server)
    assert await loop.run_once(now=due + timedelta(seconds=1)) == 0
    assert await loop.run_once(now=until + timedelta(seconds=1)) == 1
    with pytest.raises(InvalidArgumentError):
        await client.schedules.SnoozeSchedule(
            schedule_pb2.SnoozeScheduleRequest(
                name=saved.name, delay=duration_pb2.Duration(seconds=8 * 86400)
            )
        )


async def test_a_snoozed_schedule_shows_when_it_will_actually_fire(
    server: ConveyorServer, client: AsyncClient
) -> None:
    saved = await create(client, "snoozed", cron("* * * * *"))
    snoozed = await client.schedules.SnoozeSchedule(
        schedule_pb2.SnoozeScheduleRequest(
            name=saved.name, delay=duration_pb2.Duration(seconds=3600)
        )
    )
    until = snoozed.snooze_until.ToDatetime(tzinfo=UTC)
    # The occurrence due during the snooze fires when it ends, not a minute from now.
    assert snoozed.next_run_time.ToDatetime(tzinfo=UTC) == until
    fetched = await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=saved.name))
    assert fetched.next_run_time == snoozed.next_run_time
    preview = await client.schedules.PreviewSchedule(
        schedule_pb2.PreviewScheduleRequest(name=saved.name, count=2)
    )
    assert [t.ToDatetime(tzinfo=UTC) for t in preview.fire_times] == [
        until,
        until.replace(second=0, microsecond=0) + timedelta(minutes=1),
    ]
    assert await loop_of(server).run_once(now=until + timedelta(seconds=1)) == 1
    fired = await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=saved.name))
    assert fired.next_run_time.ToDatetime(tzinfo=UTC) > until

    # A snooze that ends before the next occurrence leaves it where it was.
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    once = await create(
        client,
        "once",
        schedule_pb2.Schedule(
            spec=schedule_pb2.ScheduleSpec(
                kind=enums_pb2.SCHEDULE_KIND_ONCE, expression=later.isoformat()
            ),
            task_template=schedule_pb2.TaskTemplate(kind="report.build"),
        ),
    )
    short = await client.schedules.SnoozeSchedule(
        schedule_pb2.SnoozeScheduleRequest(name=once.name, delay=duration_pb2.Duration(seconds=60))
    )
    assert short.next_run_time == once.next_run_time
    assert short.next_run_time.ToDatetime(tzinfo=UTC) == later


async def test_an_rrule_without_dtstart_fires_on_its_own_time(client: AsyncClient) -> None:
    saved = await create(
        client,
        "rrule",
        schedule_pb2.Schedule(
            spec=schedule_pb2.ScheduleSpec(
                kind=enums_pb2.SCHEDULE_KIND_RRULE, expression="FREQ=DAILY;BYHOUR=8;BYMINUTE=30"
            ),
            task_template=schedule_pb2.TaskTemplate(kind="report.build"),
        ),
    )
    first = saved.next_run_time.ToDatetime(tzinfo=UTC)
    assert (first.hour, first.minute, first.second, first.microsecond) == (8, 30, 0, 0)
    preview = await client.schedules.PreviewSchedule(
        schedule_pb2.PreviewScheduleRequest(name=saved.name, count=2)
    )
    assert [t.ToDatetime(tzinfo=UTC) for t in preview.fire_times] == [
        first,
        first + timedelta(days=1),
    ]


async def test_pause_resume_and_cancel_is_permanent(
    server: ConveyorServer, client: AsyncClient, database_url: str
) -> None:
    saved = await create(client, "p", cron("* * * * *"))
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    paused = await client.schedules.PauseSchedule(
        schedule_pb2.PauseScheduleRequest(name=saved.name, notes="why")
    )
    assert (paused.state, paused.notes) == (enums_pb2.SCHEDULE_STATE_PAUSED, "why")
    assert await loop_of(server).run_once(now=due + timedelta(seconds=1)) == 0
    resumed = await client.schedules.ResumeSchedule(
        schedule_pb2.ResumeScheduleRequest(name=saved.name)
    )
    assert resumed.state == enums_pb2.SCHEDULE_STATE_ACTIVE
    cancelled = await client.schedules.CancelSchedule(
        schedule_pb2.CancelScheduleRequest(name=saved.name)
    )
    assert cancelled.state == enums_pb2.SCHEDULE_STATE_CANCELLED
    assert await loop_of(server).run_once(now=due + timedelta(hours=1)) == 0
    for call in (
        client.schedules.ResumeSchedule(schedule_pb2.ResumeScheduleRequest(name=saved.name)),
        client.schedules.PauseSchedule(schedule_pb2.PauseScheduleRequest(name=saved.name)),
        client.schedules.RunScheduleNow(schedule_pb2.RunScheduleNowRequest(name=saved.name)),
        client.schedules.UpdateSchedule(
            schedule_pb2.UpdateScheduleRequest(
                schedule=schedule_pb2.Schedule(name=saved.name, title="x")
            )
        ),
    ):
        with pytest.raises(FailedPreconditionError):
            await call
    assert tasks_of(database_url, saved.name) == []


async def test_event_schedules_fire_once_per_matching_event(
    server: ConveyorServer, client: AsyncClient, database_url: str
) -> None:
    saved = await client.schedules.CreateSchedule(
        schedule_pb2.CreateScheduleRequest(
            parent=PARENT,
            schedule_id="on-deploy",
            schedule=schedule_pb2.Schedule(
                spec=schedule_pb2.ScheduleSpec(
                    kind=enums_pb2.SCHEDULE_KIND_EVENT, expression="deploy.*"
                ),
                task_template=schedule_pb2.TaskTemplate(kind="smoke.test"),
                overlap_policy=enums_pb2.OVERLAP_POLICY_ALLOW_ALL,
            ),
        )
    )
    with psycopg.connect(database_url) as conn:
        for event_type in ("deploy.started", "build.done", "deploy.finished"):
            conn.execute("INSERT INTO events (project, type) VALUES ('alpha', %s)", (event_type,))
    loop = loop_of(server)
    now = datetime.now(UTC)
    assert await loop.run_once(now=now) == 2
    assert await loop.run_once(now=now) == 0
    assert len(tasks_of(database_url, saved.name)) == 2


async def test_three_replicas_fire_100_due_schedules_exactly_once(
    server: ConveyorServer,
    client: AsyncClient,
    server_settings: Settings,
    tmp_path: Any,
    database_url: str,
) -> None:
    for i in range(100):
        await create(client, f"s{i:03d}", cron("0 0 1 1 *"))
    replicas = []
    for i in range(2):
        settings = server_settings.replace(data_dir=tmp_path / f"replica{i}")
        replica = ConveyorServer(settings, default_hooks())
        await replica.start()
        replicas.append(replica)
    try:
        with psycopg.connect(database_url) as conn:
            (due,) = conn.execute("SELECT min(next_run_time) FROM schedules").fetchone() or (None,)
        assert due is not None
        loops = [loop_of(s) for s in (server, *replicas)]
        created = await asyncio.gather(
            *(lp.run_once(now=due + timedelta(seconds=1)) for lp in loops)
        )
        assert sum(created) == 100
        with psycopg.connect(database_url) as conn:
            assert conn.execute(
                "SELECT count(*), count(DISTINCT schedule) FROM tasks"
            ).fetchone() == (100, 100)
            assert conn.execute("SELECT count(*) FROM schedule_runs").fetchone() == (100,)
    finally:
        for replica in replicas:
            await replica.stop(grace=0)


async def test_the_task_of_a_fire_carries_the_template(
    client: AsyncClient, database_url: str
) -> None:
    saved = await create(
        client,
        "tmpl",
        schedule_pb2.Schedule(
            spec=cron("* * * * *").spec,
            task_template=schedule_pb2.TaskTemplate(
                kind="k.v", queue="q1", priority=2, labels={"a": "b"}
            ),
        ),
    )
    task = await client.schedules.RunScheduleNow(
        schedule_pb2.RunScheduleNowRequest(name=saved.name)
    )
    got = await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=task.name))
    assert (got.kind, got.queue, got.priority, dict(got.labels)) == ("k.v", "q1", 2, {"a": "b"})
    assert got.schedule == saved.name


def _set_next_run(database_url: str, schedule: str, at: datetime) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE schedules SET next_run_time = %s WHERE project || '/' || id = %s",
            (at, schedule.removeprefix("projects/").replace("/schedules/", "/")),
        )


def _next_run(database_url: str) -> datetime:
    with psycopg.connect(database_url) as conn:
        (value,) = conn.execute("SELECT next_run_time FROM schedules").fetchone() or (None,)
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "expression", "policy", "first", "expected_next"),
    [
        # New York springs forward on 2026-03-08: 02:30 does not exist.
        ("America/New_York", "30 2 * * *", enums_pb2.DST_POLICY_RUN_ONCE,
         datetime(2026, 3, 7, 7, 30, tzinfo=UTC), [datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
                                                   datetime(2026, 3, 9, 6, 30, tzinfo=UTC)]),
        ("America/New_York", "30 2 * * *", enums_pb2.DST_POLICY_SKIP,
         datetime(2026, 3, 7, 7, 30, tzinfo=UTC), [datetime(2026, 3, 9, 6, 30, tzinfo=UTC),
                                                   datetime(2026, 3, 10, 6, 30, tzinfo=UTC)]),
        # New York falls back on 2026-11-01: 01:30 happens twice and fires once.
        ("America/New_York", "30 1 * * *", enums_pb2.DST_POLICY_RUN_ONCE,
         datetime(2026, 10, 31, 5, 30, tzinfo=UTC), [datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
                                                     datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]),
        # Chisinau springs forward on 2026-03-29 (02:00 -> 03:00) and falls back on
        # 2026-10-25 (03:00 -> 02:00).
        ("Europe/Chisinau", "30 2 * * *", enums_pb2.DST_POLICY_RUN_ONCE,
         datetime(2026, 3, 28, 0, 30, tzinfo=UTC), [datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
                                                    datetime(2026, 3, 29, 23, 30, tzinfo=UTC)]),
        ("Europe/Chisinau", "30 2 * * *", enums_pb2.DST_POLICY_SKIP,
         datetime(2026, 3, 28, 0, 30, tzinfo=UTC), [datetime(2026, 3, 29, 23, 30, tzinfo=UTC),
                                                    datetime(2026, 3, 30, 23, 30, tzinfo=UTC)]),
        ("Europe/Chisinau", "30 2 * * *", enums_pb2.DST_POLICY_SKIP,
         datetime(2026, 10, 23, 23, 30, tzinfo=UTC), [datetime(2026, 10, 24, 23, 30, tzinfo=UTC),
                                                      datetime(2026, 10, 26, 0, 30, tzinfo=UTC)]),
    ],
)  # fmt: skip
async def test_the_scheduler_fires_across_dst_changes_once(
    server: ConveyorServer,
    client: AsyncClient,
    database_url: str,
    zone: str,
    expression: str,
    policy: int,
    first: datetime,
    expected_next: list[datetime],
) -> None:
    saved = await create(
        client,
        "dst",
        schedule_pb2.Schedule(
            spec=schedule_pb2.ScheduleSpec(
                kind=enums_pb2.SCHEDULE_KIND_CRON, expression=expression, timezone=zone
            ),
            task_template=schedule_pb2.TaskTemplate(kind="dst.check"),
            dst_policy=policy,  # type: ignore[arg-type]
            overlap_policy=enums_pb2.OVERLAP_POLICY_ALLOW_ALL,
        ),
    )
    _set_next_run(database_url, saved.name, first)
    loop = loop_of(server)
    fired_at = [first]
    for expected in expected_next:
        assert await loop.run_once(now=fired_at[-1] + timedelta(seconds=1)) == 1
        assert _next_run(database_url) == expected
        fired_at.append(expected)
    assert len(tasks_of(database_url, saved.name)) == len(expected_next)


async def test_jitter_delays_the_task_within_the_bound(
    server: ConveyorServer, client: AsyncClient, database_url: str
) -> None:
    saved = await create(client, "jit", cron("* * * * *", jitter=duration_pb2.Duration(seconds=30)))
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    await loop_of(server).run_once(now=due)
    ((_, schedule_time),) = tasks_of(database_url, saved.name)
    assert due <= schedule_time <= due + timedelta(seconds=30)
