"""Enrai's task ids, `task-N`: N counts up per project from 1 (docs/compat/000-enrai.md).

Numbered with v1's own rules only, so no store is reached and nothing is written twice:
a task's number is its label `enrai_id`, and its dedupe key `enrai:task-N` (on_conflict
REJECT) makes the number unique. An enqueue takes the number after the highest among the
newest Enrai tasks; when two POSTs (on any replicas) take the same one, CreateTask lets
one claim the key and refuses the other with ALREADY_EXISTS, which tries the next.

The key lives for the longest dedupe window (30 days) and is freed when its task is
deleted; the number that counts is the highest existing one, so a number is taken again
only after the project's highest-numbered Enrai task is gone (DeleteTask or retention).
"""

from __future__ import annotations

from google.protobuf import duration_pb2
from google.rpc import code_pb2

from conveyor.server.compat.routing import CompatContext, SeedProblem
from conveyor.server.compat.v1 import Caller, V1Failed
from conveyor.server.render.enrai import COMPAT_LABEL, ENRAI, ID_LABEL
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

__all__ = ["PREFIX", "create_numbered", "find", "number_of"]

PREFIX = "task-"
KEY_PREFIX = "enrai:"
KEY_WINDOW = duration_pb2.Duration(seconds=30 * 24 * 3600)
"""The longest dedupe window v1 takes: a number stays claimed as long as it can."""
NEWEST = 20
"""How many of the newest Enrai tasks are read for the highest number: ids order tasks
by creation time, which replicas' clocks may set a little out of number order."""
ATTEMPTS = 50
"""Numbers tried by one enqueue before it gives up (each refusal means another POST
took that number at the same moment)."""
_LIST = "conveyor.v1.TaskService.ListTasks"


def number_of(enrai_id: str) -> int | None:
    """N of `task-N` (N >= 1, written without leading zeros), else None."""
    digits = enrai_id.removeprefix(PREFIX)
    if digits == enrai_id or not digits.isascii() or not digits.isdigit():
        return None
    if digits.startswith("0"):
        return None
    return int(digits)


async def _highest(ctx: CompatContext, caller: Caller, project: str) -> int:
    request = task_service_pb2.ListTasksRequest(
        parent=f"projects/{project}",
        filter=task_pb2.TaskFilter(labels={COMPAT_LABEL: ENRAI}),
        order_by="create_time desc",
        page_size=NEWEST,
        view=enums_pb2.TASK_VIEW_BASIC,
    )
    listed = await ctx.v1.call(_LIST, request, caller)
    numbers = [number_of(t.labels.get(ID_LABEL, "")) or 0 for t in listed.tasks]
    return max(numbers, default=0)


async def create_numbered(ctx: CompatContext, caller: Caller, task: task_pb2.Task) -> task_pb2.Task:
    """CreateTask of `task` as the project's next Enrai task, `task-N`."""
    project = await ctx.v1.project(caller)
    number = await _highest(ctx, caller, project) + 1
    for _ in range(ATTEMPTS):
        numbered = task_pb2.Task()
        numbered.CopyFrom(task)
        numbered.labels[ID_LABEL] = f"{PREFIX}{number}"
        numbered.dedupe_policy.CopyFrom(
            task_pb2.DedupePolicy(
                key=f"{KEY_PREFIX}{PREFIX}{number}",
                window=KEY_WINDOW,
                on_conflict=enums_pb2.ON_CONFLICT_REJECT,
            )
        )
        try:
            return await ctx.v1.create_task(caller, numbered)
        except V1Failed as failed:
            if failed.status.code != code_pb2.ALREADY_EXISTS:
                raise
        # Another enqueue took the number: the next one after both it and the newest.
        number = max(number + 1, await _highest(ctx, caller, project) + 1)
    raise SeedProblem(
        503,
        "UNAVAILABLE",
        f"no free Enrai task id after {ATTEMPTS} tries; too many enqueues at once",
        [
            {
                "rel": "retry-later",
                "method": "POST",
                "href": "/api/enrai/tasks",
                "operation_id": "enqueue_task",
                "hint": "Send the same request again in a moment.",
            }
        ],
    )


async def find(
    ctx: CompatContext, caller: Caller, project: str, enrai_id: str
) -> task_pb2.Task | None:
    """The project's Enrai task `task-N`, or None."""
    if number_of(enrai_id) is None:
        return None
    request = task_service_pb2.ListTasksRequest(
        parent=f"projects/{project}",
        filter=task_pb2.TaskFilter(labels={COMPAT_LABEL: ENRAI, ID_LABEL: enrai_id}),
        page_size=1,
        view=enums_pb2.TASK_VIEW_BASIC,
    )
    listed = await ctx.v1.call(_LIST, request, caller)
    return listed.tasks[0] if listed.tasks else None
