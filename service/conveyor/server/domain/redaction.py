"""Redaction of task input (#21 point 3): the one rule of who reads which input values.

A project and each of its queues list `redact_paths`; a task's paths are its project's
and its queue's together. Each is a JSON Pointer (RFC 6901: `/password`, `/card/number`,
`/items/0/token`), naming one place from the root of the input, or a bare key
(`password`), matching that key in every object at any depth, inside arrays too. The
value found there, whatever its type, reads `"<redacted>"`.

Who: worker keys read the full input (they run the task), and so do operator, admin and
system keys (they create and retry tasks); every other key, today the viewer, reads the
redacted input (`sees_full_input`). A dashboard session acts as the key that opened it.

Where: nothing is stored redacted. rpc/redacting.py passes every response sent to a
caller who does not see the full input through `Rule.redact_tasks` (GetTask, ListTasks,
GetTaskTree, events, schedules' task templates, and so the REST gateway, SSE, the
dashboard and the seed APIs, which all call the gRPC services); ExportTasks and webhook
payloads, which render tasks to bytes, apply `Rule.redact_task` as they render. Retries
read the stored input, never a rendered one.

Rules are read per project and kept for `REFRESH_SECONDS`: an UpdateProject or
UpdateQueue forgets its project's rule on the replica that served it at once, and the
other replicas read the change within that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import validate
from conveyor.server.domain.auth import Principal
from conveyor.server.errors import Violations
from conveyor.server.store import redaction as redaction_store
from conveyor.v1 import enums_pb2

__all__ = [
    "MAX_PATHS",
    "MAX_PATH_CHARS",
    "REDACTED",
    "Paths",
    "Redactions",
    "Rule",
    "check_paths",
    "redact_value",
    "sees_full_input",
]

REDACTED = "<redacted>"
MAX_PATHS = 64
MAX_PATH_CHARS = 256
REFRESH_SECONDS = 2.0
"""How long a replica keeps a project's rule before reading it again."""

_FULL_INPUT_ROLES = frozenset(
    {enums_pb2.ROLE_WORKER, enums_pb2.ROLE_OPERATOR, enums_pb2.ROLE_ADMIN}
)


def sees_full_input(principal: Principal) -> bool:
    """Whether the caller reads task input unredacted: worker keys (they run it), operator
    and admin keys (they create and retry it) and system keys; viewers do not."""
    return principal.system or principal.role in _FULL_INPUT_ROLES


def check_paths(v: Violations, paths: Sequence[str], field_path: str) -> list[str]:
    """The redact_paths as stored (duplicates dropped, order kept); adds a violation per
    bad entry."""
    if len(paths) > MAX_PATHS:
        v.add(field_path, f"has {len(paths)} entries; at most {MAX_PATHS}")
    for index, path in enumerate(paths):
        problem = _path_problem(path)
        if problem:
            v.add(f"{field_path}[{index}]", problem)
    return list(dict.fromkeys(paths))


def _path_problem(path: str) -> str:
    if not path:
        return "must not be empty: a JSON Pointer such as /password, or a bare key"
    if len(path) > MAX_PATH_CHARS:
        return f"must be at most {MAX_PATH_CHARS} characters"
    if path != path.strip():
        return "must not start or end with white space"
    if "\x00" in path:
        return validate.NUL_RULE
    if not path.startswith("/"):
        if "/" in path:
            return f"is a bare key with a '/'; a JSON Pointer starts with '/' (/{path})"
        return ""
    for token in path[1:].split("/"):
        rest = token
        while "~" in rest:
            _, _, rest = rest.partition("~")
            if rest[:1] not in ("0", "1"):
                return "is not a JSON Pointer: '~' must be followed by 0 or 1 (RFC 6901)"
    return ""


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


@dataclass(frozen=True)
class Paths:
    """Compiled redact paths: bare keys, and pointers as their reference tokens."""

    keys: frozenset[str]
    pointers: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, paths: Iterable[str]) -> Paths | None:
        """The compiled paths, or None when there are none."""
        keys: set[str] = set()
        pointers: list[tuple[str, ...]] = []
        for path in paths:
            if path.startswith("/"):
                pointers.append(tuple(_unescape(t) for t in path[1:].split("/")))
            elif path:
                keys.add(path)
        if not keys and not pointers:
            return None
        return cls(frozenset(keys), tuple(dict.fromkeys(pointers)))


def redact_value(value: struct_pb2.Value, paths: Paths, *, write: bool = True) -> bool:
    """Sets every value at `paths` inside `value` to "<redacted>" (only looks when not
    `write`); returns whether any was found."""
    found = False
    for pointer in paths.pointers:
        target = _at(value, pointer)
        if target is not None:
            found = True
            if not write:
                return True
            target.string_value = REDACTED
    if paths.keys:
        found = _keys(value, paths.keys, write) or found
    return found


def _at(value: struct_pb2.Value, pointer: tuple[str, ...]) -> struct_pb2.Value | None:
    """The value a pointer names, or None when the input has nothing there."""
    current = value
    for token in pointer:
        kind = current.WhichOneof("kind")
        if kind == "struct_value":
            fields = current.struct_value.fields
            if token not in fields:
                return None
            current = fields[token]
        elif kind == "list_value":
            items = current.list_value.values
            # RFC 6901 array indices: decimal, no leading zeros.
            if not token.isdigit() or (token != "0" and token.startswith("0")):
                return None
            index = int(token)
            if index >= len(items):
                return None
            current = items[index]
        else:
            return None
    return current


def _keys(value: struct_pb2.Value, keys: frozenset[str], write: bool) -> bool:
    kind = value.WhichOneof("kind")
    found = False
    if kind == "struct_value":
        for key, child in value.struct_value.fields.items():
            if key in keys:
                found = True
                if not write:
                    return True
                child.string_value = REDACTED
            elif _keys(child, keys, write):
                found = True
                if not write:
                    return True
    elif kind == "list_value":
        for item in value.list_value.values:
            if _keys(item, keys, write):
                found = True
                if not write:
                    return True
    return found


@dataclass(frozen=True)
class Rule:
    """A project's redaction: its own paths, each queue's, and its webhook choice."""

    project_paths: tuple[str, ...] = ()
    queue_paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    webhook_full_input: bool = False
    _compiled: dict[str, Paths | None] = field(default_factory=dict, compare=False)

    @property
    def empty(self) -> bool:
        return not self.project_paths and not self.queue_paths

    def paths(self, queue: str) -> Paths | None:
        """The compiled paths of a task in `queue`, or None when nothing is redacted."""
        try:
            return self._compiled[queue]
        except KeyError:
            paths = self._compiled[queue] = Paths.of(
                (*self.project_paths, *self.queue_paths.get(queue, ()))
            )
            return paths

    def needs(self, task: Any) -> bool:
        """Whether a Task (or TaskTemplate) has input that this rule redacts."""
        paths = self.paths(task.queue or "default")
        return (
            paths is not None
            and task.HasField("input")
            and redact_value(task.input, paths, write=False)
        )

    def redact_task(self, task: Any) -> bool:
        """Redacts a Task's (or TaskTemplate's) input in place; returns whether it did."""
        paths = self.paths(task.queue or "default")
        if paths is None or not task.HasField("input"):
            return False
        return redact_value(task.input, paths)


NO_RULE = Rule()


@dataclass
class _Cached:
    rule: Rule
    read_at: float


class Redactions:
    """Each project's Rule, read on demand and kept REFRESH_SECONDS."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        refresh: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._refresh = refresh
        self._clock = clock
        self._rules: dict[str, _Cached] = {}

    async def rule(self, project: str) -> Rule:
        now = self._clock()
        cached = self._rules.get(project)
        if cached is not None and now - cached.read_at < self._refresh:
            return cached.rule
        async with self._pool.connection() as conn:
            read = await redaction_store.rule(conn, project)
        rule = (
            NO_RULE
            if read is None
            else Rule(
                tuple(read.project_paths),
                {queue: tuple(paths) for queue, paths in read.queue_paths.items()},
                read.webhook_full_input,
            )
        )
        self._rules[project] = _Cached(rule, now)
        return rule

    async def for_caller(self, principal: Principal, project: str) -> Rule | None:
        """The rule to apply for this caller, or None when it reads the full input."""
        if sees_full_input(principal):
            return None
        rule = await self.rule(project)
        return None if rule.empty else rule

    def forget(self, project: str) -> None:
        """Drops a project's rule (its settings changed on this replica)."""
        self._rules.pop(project, None)
