"""Argument types that refuse bad input with the same clear words as the REST gateway."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from conveyor.v1 import enums_pb2


class EnumName(click.ParamType[int]):
    """A proto enum value by its short name (`running`), full name, any case."""

    def __init__(self, enum: Any, prefix: str, noun: str) -> None:
        self.enum = enum
        self.prefix = prefix
        self.noun = noun
        self.name = noun

    def choices(self) -> list[str]:
        return [
            name.removeprefix(self.prefix).lower()
            for name in self.enum.keys()  # noqa: SIM118 (an EnumTypeWrapper is not iterable)
            if not name.endswith("_UNSPECIFIED")
        ]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper()
        full = text if text.startswith(self.prefix) else self.prefix + text
        if full in set(self.enum.keys()) and not full.endswith("_UNSPECIFIED"):
            number: int = self.enum.Value(full)
            return number
        self.fail(
            f"{value!r} is not a {self.noun}; valid {self.noun}s are {', '.join(self.choices())}",
            param,
            ctx,
        )

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(self.choices()) + "]"


TASK_STATE = EnumName(enums_pb2.TaskState, "TASK_STATE_", "state")
ROLE = EnumName(enums_pb2.Role, "ROLE_", "role")
EXPORT_FORMAT = EnumName(enums_pb2.ExportFormat, "EXPORT_FORMAT_", "format")
OVERLAP = EnumName(enums_pb2.OverlapPolicy, "OVERLAP_POLICY_", "overlap policy")
DST = EnumName(enums_pb2.DstPolicy, "DST_POLICY_", "DST policy")
SCHEDULE_STATE = EnumName(enums_pb2.ScheduleState, "SCHEDULE_STATE_", "schedule state")
COMMAND_STATUS = EnumName(enums_pb2.CommandStatus, "COMMAND_STATUS_", "command status")
COMMAND_VERB = EnumName(enums_pb2.CommandVerb, "COMMAND_VERB_", "command verb")


class JsonValue(click.ParamType[Any]):
    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as error:
            self.fail(f"is not JSON ({error}): {value!r}", param, ctx)


JSON = JsonValue()


class KeyValue(click.ParamType[tuple[str, str]]):
    name = "key=value"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, rest = str(value).partition("=")
        if not sep or not key:
            self.fail(f"takes KEY=VALUE, not {value!r}", param, ctx)
        return key, rest


KEY_VALUE = KeyValue()

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class Duration(click.ParamType[timedelta]):
    """Seconds, or a number with a unit: 90s, 30m, 12h, 7d."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration (e.g. 30, 90s, 15m, 12h, 7d)", param, ctx)
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


DURATION = Duration()


class Time(click.ParamType[datetime]):
    """An RFC 3339 time; without a zone it is UTC."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not a time (e.g. 2026-11-24T07:30:00Z)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


TIME = Time()


class TaskId(click.ParamType[str]):
    """A task's id (a UUID) or its full name `projects/P/tasks/ID`."""

    name = "task"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        short = text.rsplit("/", 1)[-1]
        valid_shape = "/" not in text or bool(re.fullmatch(r"projects/[^/]+/tasks/[^/]+", text))
        try:
            uuid.UUID(short)
        except ValueError:
            valid_shape = False
        if not valid_shape:
            self.fail(
                f"{text!r} is not a task: give its id, a UUID such as "
                "0190a5c2-7e1b-7c3d-9f00-1a2b3c4d5e6f, or its full name "
                "projects/PROJECT/tasks/ID",
                param,
                ctx,
            )
        return text


TASK_ID = TaskId()

LIMIT = click.IntRange(min=0)


RATE_LIMIT_CLASSES = ("read", "write", "bulk", "stream", "worker")


class RateLimitParam(click.ParamType[tuple[str, Any]]):
    """`CLASS=RATE[/BURST]` (calls per second, e.g. `read=50/100`; `read=0` is
    unlimited) or `CLASS=default` (the class follows the next level: for a key, its
    project's limit). Gives (class, RequestLimit or None)."""

    name = "rate limit"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        from conveyor.v1 import project_pb2

        cls, _, spec = str(value).partition("=")
        cls = cls.strip().lower()
        if cls not in RATE_LIMIT_CLASSES:
            self.fail(
                f"{value!r}: the class must be one of {', '.join(RATE_LIMIT_CLASSES)}", param, ctx
            )
        if spec.strip().lower() == "default":
            return cls, None
        rate, _, burst = spec.partition("/")
        try:
            limit = project_pb2.RequestLimit(
                requests_per_second=float(rate), burst=int(burst) if burst else 0
            )
        except ValueError:
            self.fail(
                f"{value!r} must read CLASS=RATE[/BURST] (e.g. read=50/100) or CLASS=default",
                param,
                ctx,
            )
        return cls, limit

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "CLASS=RATE[/BURST]"


RATE_LIMIT = RateLimitParam()


def rate_limits(values: Any) -> tuple[Any, list[str]]:
    """The RateLimits message and the update-mask paths of repeated --rate-limit values."""
    from conveyor.v1 import project_pb2

    message = project_pb2.RateLimits()
    paths: list[str] = []
    for cls, limit in values:
        if limit is not None:
            getattr(message, cls).CopyFrom(limit)
        paths.append(f"rate_limits.{cls}")
    return message, paths
