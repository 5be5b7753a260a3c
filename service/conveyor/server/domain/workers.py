"""Workers: the Hello of a Connect stream, presence, and the Worker resource.

A worker is CONNECTED while one of its Connect streams is open (the stream refreshes
`last_seen_time` every TOUCH_INTERVAL) or while it keeps calling LeaseTasks; the lease
reaper marks it DISCONNECTED once it has not been seen for STALE_AFTER (its replica
died, or a unary caller went away). A stream that ends marks it DISCONNECTED at once,
unless a newer stream of the same worker holds it by then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import leases, names, paging, validate
from conveyor.server.errors import InvalidArgument, NotFound, Violations
from conveyor.server.store import workers as worker_store
from conveyor.server.store.workers import WorkerRow

__all__ = [
    "STALE_AFTER",
    "TOUCH_INTERVAL",
    "Hello",
    "Workers",
    "check_hello",
    "worker_id",
]

TOUCH_INTERVAL = 10.0
"""Seconds between a live stream's presence updates."""
STALE_AFTER = 30.0
"""Seconds without news after which a worker counts as disconnected."""
MAX_CAPACITY = 10_000
MAX_SDK_VERSION = 200
_SEEN_THROTTLE = 1.0
"""LeaseTasks refreshes a worker's row at most this often (seconds) per replica."""


@dataclass(frozen=True, slots=True)
class Hello:
    project: str
    worker: str
    queues: tuple[str, ...]
    capacity: int
    labels: dict[str, str]
    sdk_version: str
    lease_ms: int | None
    """The stream's lease duration; None leases each task for its own."""

    @property
    def name(self) -> str:
        return f"projects/{self.project}/workers/{self.worker}"


def check_hello(
    *,
    parent: str,
    worker: str,
    queues: Sequence[str],
    capacity: int,
    labels: dict[str, str],
    sdk_version: str,
    lease_duration: tuple[int, int] | None,
    prefix: str = "hello.",
) -> Hello:
    """A valid Hello, or INVALID_ARGUMENT naming every bad field."""
    v = Violations()
    project = ""
    try:
        project = names.parse(parent, f"{prefix}parent").project
    except InvalidArgument as error:
        v.items.extend(error.violations)
    if not names.ID_RE.match(worker):
        v.add(f"{prefix}worker", names.ID_RULE)
    leases.check_queues(v, queues, f"{prefix}queues")
    if not 0 <= capacity <= MAX_CAPACITY:
        v.add(f"{prefix}capacity", f"must be between 0 and {MAX_CAPACITY}")
    validate.labels(v, labels, f"{prefix}labels")
    validate.text(v, sdk_version, f"{prefix}sdk_version", MAX_SDK_VERSION)
    lease_ms = None
    if lease_duration is not None:
        lease_ms = leases.lease_ms(v, *lease_duration, f"{prefix}lease_duration")
    v.raise_if_any()
    return Hello(
        project, worker, tuple(dict.fromkeys(queues)), capacity, labels, sdk_version, lease_ms
    )


def worker_id(value: str, project: str, field_path: str) -> str:
    """A worker id, given as an id or as `projects/{project}/workers/{id}` of `project`."""
    if value.startswith("projects/"):
        parsed = names.parse(value, field_path, "workers")
        if parsed.project != project:
            raise InvalidArgument.of(field_path, f"must be a worker of projects/{project}")
        return parsed.id
    if not names.ID_RE.match(value):
        raise InvalidArgument.of(field_path, names.ID_RULE)
    return value


class Workers:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._seen: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}

    async def connect(self, hello: Hello, session: uuid.UUID) -> WorkerRow:
        """Records a Connect stream's worker as connected, held by `session`."""
        async with self._pool.connection() as conn:
            row = await worker_store.connect(
                conn,
                project=hello.project,
                id=hello.worker,
                queues=hello.queues,
                capacity=hello.capacity,
                labels=hello.labels,
                sdk_version=hello.sdk_version,
                session=session,
            )
        return _known(row, hello.project)

    async def seen(self, project: str, worker: str, queues: Sequence[str]) -> None:
        """A LeaseTasks caller is alive (written at most once a second per worker)."""
        key = (project, worker)
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < _SEEN_THROTTLE and last[1] == tuple(queues):
            return
        if len(self._seen) > 10_000:
            self._seen = {k: s for k, s in self._seen.items() if now - s[0] < _SEEN_THROTTLE}
        self._seen[key] = (now, tuple(queues))
        async with self._pool.connection() as conn:
            row = await worker_store.connect(
                conn,
                project=project,
                id=worker,
                queues=queues,
                capacity=0,
                labels={},
                sdk_version="",
                session=None,
            )
        if row is None:
            del self._seen[key]
        _known(row, project)

    async def touch(self, project: str, worker: str, session: uuid.UUID) -> bool:
        """Refreshes a stream's presence; False when the session lost the worker's row."""
        async with self._pool.connection() as conn:
            return await worker_store.touch(conn, project, worker, session)

    async def disconnect(self, project: str, worker: str, session: uuid.UUID, reason: str) -> None:
        async with self._pool.connection() as conn:
            await worker_store.disconnect(conn, project, worker, session, reason)

    async def get(self, name: str) -> WorkerRow:
        parsed = names.parse(name, "name", "workers")
        async with self._pool.connection() as conn:
            row = await worker_store.get(conn, parsed.project, parsed.id)
        if row is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        return row

    async def list_page(self, parent: str, size: int, token: str) -> tuple[list[WorkerRow], str]:
        parsed = names.parse(parent, "parent")
        limit = paging.page_size(size)
        after = str(paging.decode_token(token, ("id",))["id"]) if token else ""
        async with self._pool.connection() as conn:
            rows = await worker_store.list_page(
                conn, project=parsed.project, after=after, limit=limit + 1
            )
        next_token = paging.encode_token({"id": rows[limit - 1].id}) if len(rows) > limit else ""
        return rows[:limit], next_token


def _known(row: WorkerRow | None, project: str) -> WorkerRow:
    """The worker's row; NOT_FOUND when its project does not exist (only a system key
    gets this far with such a project)."""
    if row is None:
        name = f"projects/{project}"
        raise NotFound(f"{name} does not exist", metadata={"resource": name})
    return row
