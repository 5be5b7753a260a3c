"""BatchDeleteTasks: terminal tasks deleted by name or by filter, one bulk action per
project at a time, with its Command recorded in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server import states
from conveyor.server.domain import audit, names, task_input, task_list
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.bulk_actions import BulkLimiter
from conveyor.server.errors import InvalidArgument, NotFound, Violations
from conveyor.server.store import projects as project_store
from conveyor.server.store import tasks as task_store
from conveyor.v1 import enums_pb2, task_pb2

__all__ = ["MAX_DELETE", "batch_delete"]

MAX_DELETE = 1000


async def batch_delete(
    pool: AsyncConnectionPool[Any],
    bulk: BulkLimiter,
    server_key: bytes | None,
    parent: str,
    task_names: Sequence[str],
    task_filter: task_pb2.TaskFilter | None,
    principal: Principal | None = None,
) -> tuple[int, list[str]]:
    """Deletes terminal tasks by name (reporting the others as skipped) or by filter
    (at most MAX_DELETE per call); returns (deleted_count, skipped names).

    Exactly one of names and filter. The Command is recorded in the same transaction.
    """
    project = names.parse(parent, "parent").project
    v = Violations()
    if bool(task_names) == (task_filter is not None):
        v.add("names", "give exactly one of names and filter")
    if len(task_names) > MAX_DELETE:
        v.add("names", f"must hold at most {MAX_DELETE} names")
    ids: list[uuid.UUID] = []
    for i, task_name in enumerate(task_names):
        try:
            parsed = task_input.parse_task_name(task_name, f"names[{i}]")
        except InvalidArgument as error:
            v.items.extend(error.violations)
            continue
        if parsed.project != project:
            v.add(f"names[{i}]", f"must be a task of {parent}")
        ids.append(uuid.UUID(parsed.id))
    query = None
    if task_filter is not None:
        me = principal.key_name if principal is not None else ""
        query = task_list.parse_filter(v, task_filter, project, me=me)
    v.raise_if_any()
    terminal = sorted(s.value for s in states.TERMINAL)
    skipped: list[str] = []
    async with (
        bulk.hold(project, "BatchDeleteTasks"),
        pool.connection() as conn,
        conn.transaction(),
    ):
        if await project_store.get(conn, project) is None:
            raise NotFound(f"{parent} does not exist", metadata={"resource": parent})
        if query is None:
            deleted, kept = await task_store.delete_named(conn, project, ids, terminal=terminal)
            skipped = [f"projects/{project}/tasks/{i}" for i in kept]
        else:
            wanted = [s for s in terminal if not query.states or s in query.states]
            deleted = 0
            if wanted:
                query = replace(query, states=wanted, limit=MAX_DELETE, order="id")
                deleted = await task_store.delete_matching(conn, query, terminal=terminal)
        await audit.record_change(
            conn,
            server_key,
            principal,
            enums_pb2.COMMAND_VERB_BATCH_DELETE_TASKS,
            parent,
            {
                "by": "filter" if query is not None else "names",
                "requested": len(ids),
                "deleted": deleted,
                "skipped": len(skipped),
            },
            project=project,
        )
    return deleted, skipped
