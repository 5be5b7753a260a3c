"""EventFilter: validation, and a matcher that runs on event rows as they stream by.

Fields are ANDed. `types` are globs (`task.*`, `deploy.?`); `tasks` keeps events about
those tasks; `task_filter` is the TaskFilter of ListTasks, applied to the task snapshot
of events that carry one (as the proto says: "for task events: the task must match";
events without a task pass it). Matching reads the raw snapshot JSON, so a stream never
builds a Task message for an event it drops.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.server.domain import task_list
from conveyor.server.domain.task_input import parse_task_name
from conveyor.server.errors import InvalidArgument, Violations
from conveyor.server.store.event_rows import EventRow
from conveyor.v1 import event_pb2

__all__ = ["EventMatcher", "TaskMatch", "parse_event_filter"]

MAX_TYPES = 100
MAX_TYPE = 200
MAX_TASKS = 1000


@dataclass(frozen=True)
class TaskMatch:
    """A TaskFilter over a task snapshot (the to_jsonb of a tasks row)."""

    states: frozenset[str] = frozenset()
    priorities: frozenset[int] = frozenset()
    kinds: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    workers: frozenset[str] = frozenset()
    correlation_id: str | None = None
    creators: frozenset[str] = frozenset()
    root_task: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    search: str | None = None  # lower case
    create_time_after: datetime | None = None
    create_time_before: datetime | None = None

    def __call__(self, task: dict[str, Any]) -> bool:
        if self.states and task.get("state") not in self.states:
            return False
        if self.priorities and task.get("priority") not in self.priorities:
            return False
        if self.kinds and task.get("kind") not in self.kinds:
            return False
        if self.queues and task.get("queue") not in self.queues:
            return False
        if self.workers and task.get("worker") not in self.workers:
            return False
        if self.correlation_id is not None and task.get("correlation_id") != self.correlation_id:
            return False
        if self.creators and task.get("creator") not in self.creators:
            return False
        if self.root_task is not None and task.get("root_task") != self.root_task:
            return False
        if self.labels:
            labels = task.get("labels") or {}
            if any(labels.get(key) != value for key, value in self.labels):
                return False
        if self.search is not None and not any(
            self.search in str(task.get(name) or "").lower()
            for name in ("kind", "queue", "worker", "summary")
        ):
            return False
        if self.create_time_after is not None or self.create_time_before is not None:
            raw = task.get("create_time")
            if raw is None:
                return False
            created = datetime.fromisoformat(raw)
            if self.create_time_after is not None and created < self.create_time_after:
                return False
            if self.create_time_before is not None and created >= self.create_time_before:
                return False
        return True


@dataclass(frozen=True)
class EventMatcher:
    """Whether an event passes a filter. `key` is equal for equal filters, so a stream
    hub can evaluate a filter once per event for every subscriber that shares it."""

    key: str
    exact_types: frozenset[str] = frozenset()
    type_patterns: tuple[re.Pattern[str], ...] = ()
    subjects: frozenset[str] = frozenset()
    task: TaskMatch | None = None

    def __call__(self, row: EventRow) -> bool:
        if (self.exact_types or self.type_patterns) and not (
            row.type in self.exact_types or any(p.match(row.type) for p in self.type_patterns)
        ):
            return False
        if self.subjects and row.subject not in self.subjects:
            return False
        if self.task is not None and row.task_json is not None:
            snapshot = row.task
            if snapshot is not None and not self.task(snapshot):
                return False
        return True


def _types(
    v: Violations, types: Sequence[str]
) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    if len(types) > MAX_TYPES:
        v.add("filter.types", f"at most {MAX_TYPES} types")
    exact: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for item in types:
        if not item or len(item) > MAX_TYPE or any(ord(c) < 0x20 for c in item):
            v.add("filter.types", f"types are 1 to {MAX_TYPE} characters, no control characters")
            continue
        if any(c in item for c in "*?["):
            patterns.append(re.compile(fnmatch.translate(item)))
        else:
            exact.add(item)
    return frozenset(exact), tuple(patterns)


def _subjects(v: Violations, tasks: Sequence[str], project: str) -> frozenset[str]:
    if len(tasks) > MAX_TASKS:
        v.add("filter.tasks", f"at most {MAX_TASKS} tasks")
    subjects: set[str] = set()
    for name in tasks:
        try:
            parsed = parse_task_name(name, "filter.tasks")
        except InvalidArgument as error:
            v.items.extend(error.violations)
            continue
        if parsed.project != project:
            v.add("filter.tasks", f"{name!r} is not a task of projects/{project}")
            continue
        subjects.add(str(parsed))
    return frozenset(subjects)


def _task_match(v: Violations, task_filter: Any, project: str, me: str) -> TaskMatch | None:
    if task_filter.ByteSize() == 0:
        return None
    query = task_list.parse_filter(v, task_filter, project, "filter.task_filter", me=me)
    return TaskMatch(
        states=frozenset(query.states),
        priorities=frozenset(query.priorities),
        kinds=frozenset(query.kinds),
        queues=frozenset(query.queues),
        workers=frozenset(query.workers),
        correlation_id=query.correlation_id,
        creators=frozenset(query.creators),
        root_task=str(query.root_task) if query.root_task is not None else None,
        labels=tuple(sorted(query.labels.items())),
        search=task_filter.search.lower() if task_filter.search else None,
        create_time_after=query.create_time_after,
        create_time_before=query.create_time_before,
    )


def parse_event_filter(
    v: Violations, event_filter: event_pb2.EventFilter, project: str, *, me: str = ""
) -> EventMatcher:
    """The matcher of a request's filter; bad fields are added to `v`.

    `me` is the calling key's name, which `task_filter.creators: ["me"]` stands for.
    """
    exact, patterns = _types(v, list(event_filter.types))
    subjects = _subjects(v, list(event_filter.tasks), project)
    task = _task_match(v, event_filter.task_filter, project, me)
    digest = hashlib.sha256(project.encode() + b"\0")
    digest.update(event_filter.SerializeToString(deterministic=True))
    if task is not None and task.creators:
        # `me` differs per caller: the key (which shares matchers) must too.
        digest.update(b"\0" + "\0".join(sorted(task.creators)).encode())
    return EventMatcher(
        key=digest.hexdigest()[:32],
        exact_types=exact,
        type_patterns=patterns,
        subjects=subjects,
        task=task,
    )
