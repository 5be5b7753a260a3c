"""When schedules fire: cron, RRULE, once and event specs, in a time zone, with a DST policy.

Wall-clock kinds (CRON, RRULE) are evaluated on naive local times, then each local time
is mapped to one instant:

- a time that does not exist (the spring-forward gap) is skipped under DST_POLICY_SKIP,
  or fires at the first valid instant after the gap under DST_POLICY_RUN_ONCE;
- a time that occurs twice (the fall-back overlap) fires once, at its first occurrence.

Two local times mapping to one instant (a gap time moved onto the next occurrence) fire
once: the sequence of instants is strictly increasing, so nothing fires twice.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from dateutil import rrule

from conveyor.server.errors import InvalidArgument

CRON = "CRON"
RRULE = "RRULE"
ONCE = "ONCE"
EVENT = "EVENT"

SKIP = "SKIP"
RUN_ONCE = "RUN_ONCE"

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_EXPRESSION = 1000
# How far an iteration may search for the next fire before it gives up (a cron such as
# "0 0 30 2 *" never fires; RRULEs may end).
_SEARCH_LIMIT = 20_000
_EVENT_GLOB = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,200}$")


def zone(name: str, field_path: str = "schedule.spec.timezone") -> ZoneInfo:
    """The IANA zone; empty means UTC. INVALID_ARGUMENT names the field otherwise."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument.of(field_path, f"{name!r} is not an IANA time zone") from None


def local_to_instant(local: datetime, tz: ZoneInfo, dst_policy: str) -> datetime | None:
    """Maps a naive wall time to its instant by the DST policy; None when skipped."""
    first = local.replace(tzinfo=tz, fold=0)
    # A wall time exists when it survives the round trip through UTC.
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local:
        return first.astimezone(UTC)
    if dst_policy == SKIP:
        return None
    # In the gap. Read with the offset after the change (fold=1) the time lands before
    # the transition, with the offset before it (fold=0) after; the transition itself,
    # where the clock jumps past `local`, is the first valid instant.
    low = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) > local:
            high = middle
        else:
            low = middle
    # Transitions fall on whole seconds and high is within a second above one.
    return high.replace(microsecond=0)


@dataclass(frozen=True)
class Spec:
    kind: str
    expression: str
    tz: ZoneInfo
    # RRULEs without a DTSTART count and step from here (the schedule's create time),
    # so the occurrences do not move from one evaluation to the next; see rrule_start.
    anchor: datetime = datetime(2000, 1, 1, tzinfo=UTC)

    def fire_times(self, after: datetime, dst_policy: str = RUN_ONCE) -> Iterator[datetime]:
        """Fire instants strictly after `after` (aware), increasing, each once."""
        last = after.astimezone(UTC)
        if self.kind == ONCE:
            at = _parse_rfc3339(self.expression, "schedule.spec.expression")
            if at > last:
                yield at
            return
        if self.kind == EVENT:
            return
        local_after = last.astimezone(self.tz).replace(tzinfo=None)
        # Start an hour early in local time so an overlap hour is not missed, and rely
        # on the strictly-increasing check below to drop what is not after `after`.
        for searched, local in enumerate(self._local_times(local_after - timedelta(hours=2))):
            if searched > _SEARCH_LIMIT:
                return
            instant = local_to_instant(local, self.tz, dst_policy)
            if instant is None or instant <= last:
                continue
            last = instant
            yield instant

    def next_after(self, after: datetime, dst_policy: str = RUN_ONCE) -> datetime | None:
        return next(iter(self.fire_times(after, dst_policy)), None)

    def preview(self, start: datetime, count: int, dst_policy: str = RUN_ONCE) -> list[datetime]:
        times: list[datetime] = []
        for instant in self.fire_times(start - timedelta(microseconds=1), dst_policy):
            times.append(instant)
            if len(times) >= count:
                break
        return times

    def matches_event(self, event_type: str) -> bool:
        return self.kind == EVENT and fnmatch.fnmatchcase(event_type, self.expression)

    def _local_times(self, start: datetime) -> Iterator[datetime]:
        if self.kind == CRON:
            expression = CRON_ALIASES.get(self.expression.strip().lower(), self.expression)
            yield from CronSim(expression, start)
            return
        dtstart = rrule_start(self.anchor.astimezone(self.tz).replace(tzinfo=None), self.expression)
        rule = rrule.rrulestr(self.expression, dtstart=dtstart, ignoretz=True)
        yield from rule.xafter(start, inc=False)


def rrule_start(anchor: datetime, expression: str) -> datetime:
    """The DTSTART of an RRULE that gives none: the anchor (the schedule's create time,
    local) with the parts of its time of day finer than the rule's FREQ set to zero.

    RFC 5545 takes every part a rule leaves out from DTSTART, so without this
    `FREQ=DAILY;BYHOUR=8;BYMINUTE=30` fired at 08:30 and the create time's seconds, and
    `FREQ=HOURLY` at its minute. Now a daily rule fires at midnight unless its BYHOUR,
    BYMINUTE and BYSECOND say otherwise, an hourly one on the hour, and so on; the date
    (the weekday of a WEEKLY rule without BYDAY, the step of an INTERVAL) still comes
    from the anchor. A DTSTART in the expression wins over this one.
    """
    found = _FREQ.search(expression)
    keep = _FREQ_KEEPS.get(found.group(1).upper(), 0) if found else 0
    hour, minute, second = (anchor.hour, anchor.minute, anchor.second)[:keep] + (0, 0, 0)[keep:]
    return anchor.replace(hour=hour, minute=minute, second=second, microsecond=0)


# How many time-of-day parts (hour, minute, second) of the anchor a FREQ keeps.
_FREQ_KEEPS = {"HOURLY": 1, "MINUTELY": 2, "SECONDLY": 3}
_FREQ = re.compile(r"\bFREQ=([A-Za-z]+)", re.IGNORECASE)


def _parse_rfc3339(text: str, field_path: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument.of(field_path, "must be an RFC 3339 time") from None
    if value.tzinfo is None:
        raise InvalidArgument.of(field_path, "must be an RFC 3339 time with an offset or Z")
    return value.astimezone(UTC)


def parse(
    kind: str,
    expression: str,
    timezone: str,
    prefix: str = "schedule.spec",
    anchor: datetime | None = None,
) -> Spec:
    """Validates a spec at write time; INVALID_ARGUMENT names the bad field."""
    tz = zone(timezone, f"{prefix}.timezone")
    field_path = f"{prefix}.expression"
    text = expression.strip()
    if not text:
        raise InvalidArgument.of(field_path, "is required")
    if len(text) > MAX_EXPRESSION:
        raise InvalidArgument.of(field_path, f"must be at most {MAX_EXPRESSION} characters")
    if kind == CRON:
        cron = CRON_ALIASES.get(text.lower(), text)
        try:
            CronSim(cron, datetime(2000, 1, 1))
        except (CronSimError, ValueError, IndexError) as error:
            raise InvalidArgument.of(
                field_path, f"is not a valid cron expression: {error}"
            ) from None
    elif kind == RRULE:
        try:
            rule = rrule.rrulestr(text, dtstart=datetime(2000, 1, 1), ignoretz=True)
        except (ValueError, TypeError, KeyError) as error:
            raise InvalidArgument.of(field_path, f"is not a valid RRULE: {error}") from None
        if not isinstance(rule, rrule.rrule | rrule.rruleset):
            raise InvalidArgument.of(field_path, "is not a valid RRULE")
    elif kind == ONCE:
        _parse_rfc3339(text, field_path)
    elif kind == EVENT:
        if not _EVENT_GLOB.match(text):
            raise InvalidArgument.of(
                field_path, "must be an event-type glob such as task.failed or deploy.*"
            )
    else:
        raise InvalidArgument.of(f"{prefix}.kind", "must be CRON, RRULE, ONCE or EVENT")
    return Spec(kind, text, tz, anchor or datetime.now(UTC))
