"""The task row as the store hands it out: one dataclass for every column of `tasks`."""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import orjson
from psycopg.abc import Buffer
from psycopg.adapt import Loader


# Not frozen, on purpose (treat it as immutable; change it with dataclasses.replace): a
# frozen dataclass sets each field through object.__setattr__, and with sixty fields that
# made building a row ~10x dearer (~27 against ~2 us), paid for every task a create
# answers, a lease hands out or a read returns.
@dataclass(slots=True)
class TaskRow:
    project: str
    id: uuid.UUID
    queue: str
    kind: str
    input: Any
    priority: int
    state: str
    state_reason: str
    labels: dict[str, str]
    max_attempts: int
    backoff: str
    initial_backoff_ms: int
    max_backoff_ms: int
    attempt: int
    schedule_time: datetime
    lease_duration_ms: int
    concurrency_key: str | None
    concurrency_limit: int
    requires_approval: bool
    approval_timeout_ms: int | None
    approval_timeout_action: str
    correlation_id: str
    parent_task: uuid.UUID | None
    root_task: uuid.UUID
    callback_url: str
    resume_token: str
    result: Any
    summary: str
    error: dict[str, Any] | None
    worker: str
    lease_id: uuid.UUID | None
    lease_expire_time: datetime | None
    cancel_requested: bool
    schedule: str
    request_id: str | None
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime
    approver: str = ""
    approved: bool | None = None
    approval_comment: str = ""
    decide_time: datetime | None = None
    progress: dict[str, Any] | None = None
    progress_time: datetime | None = None
    progress_event_time: datetime | None = None
    execution_timeout_ms: int | None = None
    creator: str = ""  # an API key name or a schedule name (0020)
    # Dependencies (0023): the ids it depends on (None: none; an event's snapshot holds
    # them as strings), its CANCEL | RUN_ANYWAY policy, how many have not ended, and
    # whether other tasks depend on it.
    depends_on: list[Any] | None = None
    dependency_failure_policy: str | None = None
    deps_remaining: int = 0
    has_dependents: bool = False
    traceparent: str | None = None  # the creator's W3C trace context (0026)

    @property
    def name(self) -> str:
        return f"projects/{self.project}/tasks/{self.id}"


@dataclass(frozen=True, slots=True)
class AttemptRow:
    project: str
    task_id: uuid.UUID
    attempt: int
    worker: str
    lease_id: uuid.UUID
    start_time: datetime
    end_time: datetime | None
    outcome: str | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None


TASK_COLUMNS = tuple(f.name for f in fields(TaskRow))
# The row's values in field order, in one C call: a dict of sixty keys passed as keyword
# arguments cost ~6x as much (~17 against ~2.6 us measured), twice per task a lease
# settles (the leased row and the ended one).
_VALUES = operator.itemgetter(*TASK_COLUMNS)


def task_row(row: dict[str, Any]) -> TaskRow:
    """A TaskRow from a dict_row of `SELECT tasks.*` (extra keys are ignored)."""
    return TaskRow(*_VALUES(row))


def task_row_maker(columns: Sequence[str]) -> Callable[[Sequence[Any]], TaskRow]:
    """TaskRows from tuple rows whose columns are named `columns` (a cursor's
    description; extra columns are ignored): no dict per row, for statements that
    return many (the settle statement returns two rows per task it settles)."""
    where = {name: i for i, name in enumerate(columns)}
    pick = operator.itemgetter(*(where[name] for name in TASK_COLUMNS))

    def make(row: Sequence[Any]) -> TaskRow:
        return TaskRow(*pick(row))

    return make


def attempt_row(row: dict[str, Any]) -> AttemptRow:
    return AttemptRow(**row)


def json_value(data: Buffer) -> Any:
    """A JSON text's value by orjson, or json for what orjson refuses (a number beyond
    the range of a double). For task rows, which end in protobuf messages, where every
    number is a double anyway (orjson reads an integer beyond 64 bits as a double).

    A task's JSON columns (input, labels, result...) were about a third of the server's
    own time on the rows of a settle batch and of decoding a ListTasks page; orjson
    parses a small value in ~0.15 us against json.loads' ~1.6 us, from the buffer as
    psycopg hands it over (no copy to bytes)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(bytes(data))


class JsonbLoader(Loader):
    """jsonb (text format) by `json_value`: register it on the cursor of a statement that
    reads many tasks."""

    def load(self, data: Buffer) -> Any:
        return json_value(data)
