"""TaskService rules: create (single and batch), get, list and cancel.

Creates are validated here and inserted by the replica's CreateBatcher, which folds
concurrent single creates into shared statements; a create with a dedupe_policy goes
through task_dedupe instead, one transaction per item. Cancelling follows the transition
table in `states`: a guarded UPDATE applies it, and when the guard misses (the task
moved on meanwhile) the task is read again and the new state decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.client._limits import MAX_PAGE_BYTES
from conveyor.server import states
from conveyor.server.domain import (
    audit,
    names,
    request_ids,
    task_batch_create,
    task_batches,
    task_cancel,
    task_deletes,
    task_dependencies,
    task_input,
    task_list,
)
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.bulk_actions import BulkLimiter
from conveyor.server.domain.task_batch_create import MAX_BATCH
from conveyor.server.domain.task_dedupe import Created, outcome
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.errors import (
    ConveyorError,
    Internal,
    NotFound,
    Violations,
)
from conveyor.server.states import State
from conveyor.server.store import approvals
from conveyor.server.store import task_dependencies as dependency_store
from conveyor.server.store import tasks as task_store
from conveyor.server.store.task_batcher import CreateBatcher
from conveyor.server.store.task_rows import TaskRow
from conveyor.server.store.tasks import TaskView
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

__all__ = ["MAX_BATCH", "WORKER_SEEN_WITHIN", "Created", "Tasks"]

MAX_REASON = 1000
MAX_TREE = 500
# A worker not heard from for this long does not count against NO_WORKER, even if
# its row still says connected (its replica died before marking it).
WORKER_SEEN_WITHIN = timedelta(minutes=2)
PAGE_SLICE = 20
"""ListTasks rows decoded and rendered between two yields to the event loop (~0.3 ms)."""


def _reason(value: str, field_path: str = "reason") -> str:
    v = Violations()
    task_input.check_text(v, value, field_path, MAX_REASON)
    v.raise_if_any()
    return value


class Tasks:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        batcher: CreateBatcher,
        *,
        ids: TaskIds | None = None,
        worker_seen_within: timedelta = WORKER_SEEN_WITHIN,
        server_key: bytes | None = None,
    ) -> None:
        self._server_key = server_key
        """Signs the audit log; with it, cancels on behalf of a principal are recorded."""
        self._pool = pool
        self._batcher = batcher
        self._ids = ids or TaskIds()
        self._worker_seen_within = worker_seen_within
        self._bulk = BulkLimiter(pool)  # BatchDeleteTasks: one bulk action per project

    async def create(
        self,
        parent: str,
        task: task_pb2.Task,
        request_id: str,
        *,
        creator: str = "",
        traceparent: str | None = None,
    ) -> Created:
        """Creates one task; `creator` names the calling key, `traceparent` its trace."""
        project = names.parse(parent, "parent").project
        new = task_input.new_task(
            task,
            project=project,
            request_id=request_id,
            ids=self._ids,
            request_hash=task_batches.request_hash(parent, task, request_id),
            creator=creator,
        )
        if traceparent:
            new.traceparent = traceparent  # a fresh row of this call's own: no copy
        if new.dedupe is not None or new.depends_on:
            async with self._pool.connection() as conn:
                return await task_dependencies.create_unbatched(conn, new, parent, "")
        return outcome(await self._batcher.create(new), new, parent, "")

    async def batch_create(
        self,
        parent: str,
        requests: Sequence[task_service_pb2.CreateTaskRequest],
        *,
        atomic: bool,
        creator: str = "",
        traceparent: str | None = None,
    ) -> list[Created | ConveyorError]:
        """One result per request (domain/task_batch_create.py)."""
        return await task_batch_create.batch_create(
            self._pool,
            self._batcher,
            self._ids,
            parent,
            requests,
            atomic=atomic,
            creator=creator,
            traceparent=traceparent,
        )

    async def get(self, name: str) -> TaskView:
        parsed = task_input.parse_task_name(name, "name")
        async with self._pool.connection() as conn:
            view = await task_store.get(
                conn,
                parsed.project,
                uuid.UUID(parsed.id),
                worker_seen_within=self._worker_seen_within,
            )
        if view is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        return view

    async def tree(self, name: str) -> tuple[list[TaskRow], bool, list[TaskRow]]:
        """The named task's tree (root first, at most MAX_TREE), whether it is cut, and
        the tasks outside it that its tasks depend on (at most MAX_TREE)."""
        parsed = task_input.parse_task_name(name, "name")
        async with self._pool.connection() as conn:
            rows = await task_store.tree(
                conn, parsed.project, uuid.UUID(parsed.id), limit=MAX_TREE + 1
            )
            if not rows:
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            rows, truncated = rows[:MAX_TREE], len(rows) > MAX_TREE
            dependencies = []
            if any(r.depends_on for r in rows):
                dependencies = await dependency_store.outside(
                    conn, parsed.project, [r.id for r in rows], limit=MAX_TREE
                )
        return rows, truncated, dependencies

    async def list_page(
        self,
        request: task_service_pb2.ListTasksRequest,
        size_of: Callable[[TaskRow, str | None], int] | None = None,
        max_bytes: int = MAX_PAGE_BYTES,
        *,
        me: str = "",
    ) -> tuple[list[TaskRow], str]:
        """A page of tasks and the next page token.

        `size_of` sees each row of the page with why it waits (None when it does not) and
        gives its size as the caller sends it: the page stops before its rows together
        pass `max_bytes`, and the token continues after the last one kept. TASK_VIEW_BASIC
        rows come without input, result and progress. `me` is the calling key's name,
        which the filter's `creators: ["me"]` stands for.
        """
        query = task_list.query(
            request.parent,
            request.filter,
            request.page_size,
            request.page_token,
            request.order_by,
            me=me,
        )
        size = query.limit - 1  # the query reads one row more: is there a next page?
        rows: list[TaskRow] = []
        total = 0
        async with (
            self._pool.connection() as conn,
            contextlib.aclosing(
                task_store.page_slices(
                    conn,
                    query,
                    basic=request.view == enums_pb2.TASK_VIEW_BASIC,
                    worker_seen_within=self._worker_seen_within,
                    slice_rows=PAGE_SLICE,
                )
            ) as slices,
        ):
            async for piece in slices:
                for row, reason in piece:
                    if len(rows) == size:
                        return rows, task_list.token_at(rows[-1], query, request.filter)
                    if size_of is not None:
                        total += size_of(row, reason)
                        if total > max_bytes and rows:
                            return rows, task_list.token_at(rows[-1], query, request.filter)
                    rows.append(row)
                # A page is decoded and rendered a slice at a time, letting the other calls
                # of this replica's one event loop run in between: a page of 100 (several
                # ms) would otherwise hold every other caller for all of it.
                await asyncio.sleep(0)
        return rows, ""

    async def cancel(
        self,
        name: str,
        reason: str,
        principal: Principal | None = None,
        request_id: str = "",
        request_hash: str = "",
    ) -> TaskRow:
        """CANCELLED at once when waiting; cancel_requested when RUNNING; else refused
        (task_cancel.py). With a principal, the cancel is recorded in the audit log."""
        parsed = task_input.parse_task_name(name, "name")
        reason = _reason(reason)
        v = Violations()
        request_ids.check(v, request_id)
        v.raise_if_any()
        project, task_id = parsed.project, uuid.UUID(parsed.id)
        async with self._pool.connection() as conn, conn.transaction():
            return await task_cancel.cancel(
                conn,
                self._server_key,
                principal,
                name,
                project,
                task_id,
                reason,
                request_id,
                request_hash,
            )

    async def decide(
        self, name: str, *, approve: bool, text: str, principal: Principal | None
    ) -> TaskRow:
        """ApproveTask (`text` is the comment) or RejectTask (`text` is the reason).

        Only an AWAITING_APPROVAL task may be decided; the decision, its approver (the
        principal's key name) and its Command in the audit log commit together.
        """
        parsed = task_input.parse_task_name(name, "name")
        text = _reason(text, "comment" if approve else "reason")
        project, task_id = parsed.project, uuid.UUID(parsed.id)
        approver = principal.key_name if principal is not None else "system"
        async with self._pool.connection() as conn, conn.transaction():
            row = await approvals.decide(
                conn, project, task_id, approve=approve, approver=approver, comment=text
            )
            if row is None:
                current = await task_store.get_row(conn, project, task_id)
                if current is None:
                    raise NotFound(f"{name} does not exist", metadata={"resource": name})
                states.target(State(current.state), "approve" if approve else "reject", name)
                raise Internal(f"{name} could not be decided")  # unreachable: target raised
            await audit.record_change(
                conn,
                self._server_key,
                principal,
                enums_pb2.COMMAND_VERB_APPROVE_TASK
                if approve
                else enums_pb2.COMMAND_VERB_REJECT_TASK,
                name,
                {"comment": text} if approve else {"reason": text},
                project=project,
            )
            return row

    async def batch_delete(
        self,
        parent: str,
        task_names: Sequence[str],
        task_filter: task_pb2.TaskFilter | None,
        principal: Principal | None = None,
    ) -> tuple[int, list[str]]:
        """BatchDeleteTasks (see task_deletes.batch_delete); returns (deleted, skipped)."""
        return await task_deletes.batch_delete(
            self._pool,
            self._bulk,
            self._server_key,
            parent,
            task_names,
            task_filter,
            principal,
        )
