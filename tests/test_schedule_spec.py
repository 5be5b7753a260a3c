"""Fire times of schedule specs: DST gaps and overlaps, RRULE bounds, bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.server.domain import schedule_spec
from conveyor.server.errors import InvalidArgument


def local_times(spec: schedule_spec.Spec, start: datetime, count: int, policy: str) -> list[str]:
    return [t.astimezone(spec.tz).isoformat() for t in spec.preview(start, count, policy)]


# Spring forward: New York 2026-03-08 02:00 -> 03:00; Chisinau 2026-03-29 02:00 -> 03:00.
SPRING = [
    ("America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC), "2026-03-08", "-05:00", "-04:00"),
    ("Europe/Chisinau", datetime(2026, 3, 28, 12, tzinfo=UTC), "2026-03-29", "+02:00", "+03:00"),
]
# Fall back: New York 2026-11-01 02:00 -> 01:00; Chisinau 2026-10-25 03:00 -> 02:00.
FALL = [
    (
        "America/New_York",
        datetime(2026, 10, 31, 12, tzinfo=UTC),
        "30 1 * * *",
        "2026-11-01T01:30:00-04:00",
    ),
    (
        "Europe/Chisinau",
        datetime(2026, 10, 24, 12, tzinfo=UTC),
        "30 2 * * *",
        "2026-10-25T02:30:00+03:00",
    ),
]


@pytest.mark.parametrize(("zone", "start", "day", "before", "after"), SPRING)
def test_spring_forward_skip_drops_the_missing_time(
    zone: str, start: datetime, day: str, before: str, after: str
) -> None:
    spec = schedule_spec.parse("CRON", "30 2 * * *", zone)
    times = local_times(spec, start, 2, schedule_spec.SKIP)
    assert all(not t.startswith(day) for t in times)
    assert times[0].endswith(after)


@pytest.mark.parametrize(("zone", "start", "day", "before", "after"), SPRING)
def test_spring_forward_run_once_fires_at_the_end_of_the_gap(
    zone: str, start: datetime, day: str, before: str, after: str
) -> None:
    spec = schedule_spec.parse("CRON", "30 2 * * *", zone)
    assert local_times(spec, start, 1, schedule_spec.RUN_ONCE) == [f"{day}T03:00:00{after}"]


@pytest.mark.parametrize(("zone", "start", "day", "before", "after"), SPRING)
def test_every_time_in_the_gap_fires_once_in_all(
    zone: str, start: datetime, day: str, before: str, after: str
) -> None:
    spec = schedule_spec.parse("CRON", "*/15 2 * * *", zone)
    times = local_times(spec, start, 2, schedule_spec.RUN_ONCE)
    assert times[0] == f"{day}T03:00:00{after}"
    assert not times[1].startswith(day)


@pytest.mark.parametrize(("zone", "start", "cron", "first"), FALL)
@pytest.mark.parametrize("policy", [schedule_spec.SKIP, schedule_spec.RUN_ONCE])
def test_fall_back_fires_a_repeated_time_once(
    zone: str, start: datetime, cron: str, first: str, policy: str
) -> None:
    spec = schedule_spec.parse("CRON", cron, zone)
    times = local_times(spec, start, 3, policy)
    assert times[0] == first
    assert times[1][:10] != times[0][:10], "the repeated wall time fired twice"


def test_fall_back_every_half_hour_never_fires_an_instant_twice() -> None:
    spec = schedule_spec.parse("CRON", "*/30 * * * *", "America/New_York")
    times = spec.preview(datetime(2026, 11, 1, 4, tzinfo=UTC), 12)
    assert times == sorted(set(times))


def test_cron_aliases_and_six_fields() -> None:
    spec = schedule_spec.parse("CRON", "@hourly", "UTC")
    assert [t.hour for t in spec.preview(datetime(2026, 1, 1, tzinfo=UTC), 3)] == [0, 1, 2]
    seconds = schedule_spec.parse("CRON", "*/20 * * * * *", "UTC")
    assert [t.second for t in seconds.preview(datetime(2026, 1, 1, tzinfo=UTC), 3)] == [0, 20, 40]


def test_rrule_count_and_until() -> None:
    anchor = datetime(2026, 1, 1, 15, tzinfo=UTC)
    counted = schedule_spec.parse("RRULE", "FREQ=DAILY;COUNT=3", "UTC", anchor=anchor)
    assert len(counted.preview(datetime(2025, 1, 1, tzinfo=UTC), 10)) == 3
    until = schedule_spec.parse(
        "RRULE",
        "DTSTART:20260105T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260121T000000",
        "Europe/Chisinau",
    )
    times = local_times(until, datetime(2025, 1, 1, tzinfo=UTC), 10, schedule_spec.RUN_ONCE)
    assert times == [
        "2026-01-05T09:00:00+02:00",
        "2026-01-07T09:00:00+02:00",
        "2026-01-12T09:00:00+02:00",
        "2026-01-14T09:00:00+02:00",
        "2026-01-19T09:00:00+02:00",
    ]
    # The anchor keeps occurrences in place from one evaluation to the next (a daily
    # rule without DTSTART or BYHOUR fires at midnight, counted from the anchor's day).
    later = counted.preview(datetime(2026, 1, 2, 16, tzinfo=UTC), 10)
    assert later == [datetime(2026, 1, 3, tzinfo=UTC)]


def test_rrule_without_dtstart_takes_no_time_of_day_from_the_create_time() -> None:
    # Created at 10:17:42.123456 UTC (12:17:42 in Chisinau).
    anchor = datetime(2026, 3, 4, 10, 17, 42, 123456, tzinfo=UTC)

    def fires(expression: str, zone: str = "UTC", count: int = 2) -> list[str]:
        spec = schedule_spec.parse("RRULE", expression, zone, anchor=anchor)
        return local_times(spec, anchor, count, schedule_spec.RUN_ONCE)

    assert fires("FREQ=DAILY;BYHOUR=8;BYMINUTE=30", "Europe/Chisinau") == [
        "2026-03-05T08:30:00+02:00",
        "2026-03-06T08:30:00+02:00",
    ]
    assert fires("FREQ=DAILY;BYHOUR=8") == [
        "2026-03-05T08:00:00+00:00",
        "2026-03-06T08:00:00+00:00",
    ]
    assert fires("FREQ=DAILY") == ["2026-03-05T00:00:00+00:00", "2026-03-06T00:00:00+00:00"]
    assert fires("FREQ=HOURLY") == ["2026-03-04T11:00:00+00:00", "2026-03-04T12:00:00+00:00"]
    assert fires("RRULE:FREQ=HOURLY;INTERVAL=2") == [
        "2026-03-04T12:00:00+00:00",
        "2026-03-04T14:00:00+00:00",
    ]
    assert fires("freq=minutely;interval=20") == [
        "2026-03-04T10:37:00+00:00",
        "2026-03-04T10:57:00+00:00",
    ]
    assert fires("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9") == [
        "2026-03-09T09:00:00+00:00",
        "2026-03-16T09:00:00+00:00",
    ]
    # A DTSTART of its own wins.
    assert fires("DTSTART:20260101T091512\nRRULE:FREQ=DAILY") == [
        "2026-03-05T09:15:12+00:00",
        "2026-03-06T09:15:12+00:00",
    ]


def test_once_and_event() -> None:
    once = schedule_spec.parse("ONCE", "2026-12-01T10:00:00Z", "UTC")
    assert once.preview(datetime(2026, 1, 1, tzinfo=UTC), 5) == [
        datetime(2026, 12, 1, 10, tzinfo=UTC)
    ]
    assert once.preview(datetime(2027, 1, 1, tzinfo=UTC), 5) == []
    event = schedule_spec.parse("EVENT", "deploy.*", "UTC")
    assert event.matches_event("deploy.finished") and not event.matches_event("task.failed")
    assert event.preview(datetime(2026, 1, 1, tzinfo=UTC), 5) == []


@pytest.mark.parametrize(
    ("kind", "expression", "zone", "field"),
    [
        ("CRON", "61 * * * *", "UTC", "schedule.spec.expression"),
        ("CRON", "* * *", "UTC", "schedule.spec.expression"),
        ("CRON", "", "UTC", "schedule.spec.expression"),
        ("RRULE", "FREQ=SOMETIMES", "UTC", "schedule.spec.expression"),
        ("ONCE", "tomorrow", "UTC", "schedule.spec.expression"),
        ("ONCE", "2026-12-01T10:00:00", "UTC", "schedule.spec.expression"),
        ("EVENT", "deploy finished", "UTC", "schedule.spec.expression"),
        ("CRON", "* * * * *", "Mars/Olympus_Mons", "schedule.spec.timezone"),
        ("SOMETIMES", "* * * * *", "UTC", "schedule.spec.kind"),
    ],
)
def test_bad_specs_name_the_field(kind: str, expression: str, zone: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        schedule_spec.parse(kind, expression, zone)
    assert [v.field for v in caught.value.violations] == [field]
