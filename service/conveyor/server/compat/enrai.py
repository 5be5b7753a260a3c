"""Seed 000, Enrai's sequential task queue (docs/compat/000-enrai.md).

    POST   /api/enrai/tasks        {"text", "rollout"|"resume_path", "workdir",
                                    "callback_url", "instructions", "manifest"}
                                   -> 200 <task>      (ListTasks, CreateTask: enrai_ids.py)
    GET    /api/enrai/tasks        -> 200 {"active", "queued", "completed"} (ListTasks x3)
    DELETE /api/enrai/tasks/{id}   -> 200 <task>      (ListTasks by enrai_id, CancelTask)
    GET    /api/enrai/events       -> text/event-stream of `task_queue` events, each the
                                      GET answer (WatchEvents, then ListTasks per change)

Every Enrai task is a v1 task of kind `enrai.task` on queue `enrai`, labelled
compat=enrai and enrai_id=task-N (its Enrai id), with concurrency_key `enrai` and
limit 1: tasks run one at a time, in order, whatever the workers' capacity.
`rollout`/`resume_path` is the resume_token; the text, instructions, manifest, workdir
and rollout make the input. callback_url is the task's; the global "Task callback URL"
is the project's callback_url (UpdateProject). The callback payload is render/enrai.py's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from conveyor.server.compat.enrai_ids import create_numbered, find, number_of
from conveyor.server.compat.problems import SeedApi
from conveyor.server.compat.routing import (
    BadSeedInput,
    CompatContext,
    Operation,
    SeedProblem,
    json_response,
    read_json,
    seed_route,
)
from conveyor.server.compat.v1 import Caller, V1Failed
from conveyor.server.gateway.problems import status_of
from conveyor.server.gateway.streaming import wants_sse
from conveyor.server.render.enrai import COMPAT_LABEL, ENRAI, enrai_task, is_enrai
from conveyor.v1 import enums_pb2, event_pb2, task_pb2, task_service_pb2

__all__ = ["KIND", "QUEUE", "SEED", "routes", "task_of"]

KIND = "enrai.task"
QUEUE = "enrai"
COMPLETED_SHOWN = 50
"""How many finished tasks `completed` lists, newest first."""
KEEPALIVE = 15.0
"""Seconds between SSE keep-alive comments on an idle stream."""

SEED = SeedApi(
    "enrai",
    fields={
        "task.input.text": "text",
        "task.input": "text",
        "task.resume_token": "resume_path",
        "task.callback_url": "callback_url",
        "name": "id",
    },
)
_WATCH = "conveyor.v1.EventService.WatchEvents"
_LIST_ACTION = {
    "rel": "list",
    "method": "GET",
    "href": "/api/enrai/tasks",
    "operation_id": "list_tasks",
    "hint": "List the queue (active, queued, completed) to find the task's id.",
}
_OPTIONAL_TEXT = ("rollout", "resume_path", "workdir", "callback_url", "instructions")
S = enums_pb2
_QUEUED = [S.TASK_STATE_SCHEDULED, S.TASK_STATE_QUEUED, S.TASK_STATE_AWAITING_APPROVAL]
_DONE = [
    S.TASK_STATE_SUCCEEDED,
    S.TASK_STATE_FAILED,
    S.TASK_STATE_CANCELLED,
    S.TASK_STATE_INTERRUPTED,
]


def task_of(body: Any) -> task_pb2.Task:
    """The v1 Task for an Enrai enqueue body; BadSeedInput for a wrong JSON type."""
    if not isinstance(body, dict):
        raise BadSeedInput.of("body", "must be a JSON object")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadSeedInput.of("text", "is required: the task's prompt")
    given: dict[str, Any] = {"text": text}
    for key in _OPTIONAL_TEXT:
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise BadSeedInput.of(key, "must be a string")
        if value and key != "callback_url":
            given[key] = value
    manifest = body.get("manifest")
    if manifest is not None:
        if not isinstance(manifest, dict):
            raise BadSeedInput.of("manifest", "must be a JSON object")
        given["manifest"] = manifest
    task = task_pb2.Task(
        kind=KIND,
        queue=QUEUE,
        labels={COMPAT_LABEL: ENRAI},
        concurrency_key=ENRAI,
        concurrency_limit=1,
        callback_url=body.get("callback_url") or "",
        # resume_path is the full path of a rollout; rollout its file name. Either
        # continues that rollout; with both, the full path.
        resume_token=body.get("resume_path") or body.get("rollout") or "",
    )
    json_format.ParseDict(given, task.input)
    return task


def _filter(states: Sequence[enums_pb2.TaskState.ValueType]) -> task_pb2.TaskFilter:
    return task_pb2.TaskFilter(states=states, labels={COMPAT_LABEL: ENRAI})


async def queue_state(ctx: CompatContext, caller: Caller, project: str) -> dict[str, Any]:
    """{"active": task | null, "queued": [...], "completed": [...]} of the project."""

    async def listed(
        states: Sequence[enums_pb2.TaskState.ValueType], order: str, size: int
    ) -> list[task_pb2.Task]:
        request = task_service_pb2.ListTasksRequest(
            parent=f"projects/{project}",
            filter=_filter(states),
            order_by=order,
            page_size=size,
            view=S.TASK_VIEW_FULL,
        )
        response = await ctx.v1.call("conveyor.v1.TaskService.ListTasks", request, caller)
        return list(response.tasks)

    active, queued, completed = await asyncio.gather(
        listed([S.TASK_STATE_RUNNING], "create_time", 10),
        listed(_QUEUED, "create_time", 1000),
        listed(_DONE, "create_time desc", COMPLETED_SHOWN),
    )
    return {
        "active": enrai_task(active[0]) if active else None,
        "queued": [enrai_task(t) for t in queued],
        "completed": [enrai_task(t) for t in completed],
    }


def routes(ctx: CompatContext) -> list[BaseRoute]:
    async def enqueue(request: Request, caller: Caller) -> Response:
        created = await create_numbered(ctx, caller, task_of(await read_json(request)))
        return json_response(enrai_task(created), 200, caller.request_id)

    async def state(request: Request, caller: Caller) -> Response:
        if wants_sse(request.headers.get("accept", "")):
            return await events(request, caller)
        project = await ctx.v1.project(caller)
        return json_response(await queue_state(ctx, caller, project), 200, caller.request_id)

    async def cancel(request: Request, caller: Caller) -> Response:
        project = await ctx.v1.project(caller)
        task_id = request.path_params["id"]
        task = await _enrai_task(ctx, caller, project, task_id)
        if task is None:
            # Only the Enrai queue's tasks are Enrai's to cancel; v1 reaches the others.
            raise SeedProblem(
                404,
                "NOT_FOUND",
                f"no task {task_id!r} in the Enrai queue",
                [_LIST_ACTION],
            )
        name = task.name
        cancelled = await ctx.v1.call(
            "conveyor.v1.TaskService.CancelTask",
            task_service_pb2.CancelTaskRequest(name=name, reason="cancelled through Enrai"),
            caller,
        )
        return json_response(enrai_task(cancelled), 200, caller.request_id)

    async def events(request: Request, caller: Caller) -> Response:
        project = await ctx.v1.project(caller)
        watch = event_pb2.WatchEventsRequest(
            parent=f"projects/{project}",
            filter=event_pb2.EventFilter(types=["task.*"], task_filter=_filter([])),
        )
        call = ctx.v1.stream(_WATCH, watch, caller)
        # The first message (a keep-alive at the stream's start) says the call was
        # accepted; a refusal raises here and becomes the seed's problem+json.
        try:
            await call.read()
        except grpc.aio.AioRpcError as error:
            call.cancel()
            raise V1Failed(_WATCH, status_of(error), watch) from None
        return StreamingResponse(
            _sse(ctx, caller, project, call),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return [
        seed_route(
            ctx,
            SEED,
            "/api/enrai/tasks",
            {"POST": Operation("enqueue_task", enqueue), "GET": Operation("list_tasks", state)},
        ),
        seed_route(
            ctx, SEED, "/api/enrai/tasks/{id}", {"DELETE": Operation("cancel_task", cancel)}
        ),
        seed_route(ctx, SEED, "/api/enrai/events", {"GET": Operation("task_queue", events)}),
    ]


async def _enrai_task(
    ctx: CompatContext, caller: Caller, project: str, task_id: str
) -> task_pb2.Task | None:
    """The Enrai task `task_id` of the project: its Enrai id `task-N`, or (as answered
    before Enrai ids were numbered) its Conveyor id."""
    if number_of(task_id) is not None:
        return await find(ctx, caller, project, task_id)
    try:
        task: task_pb2.Task = await ctx.v1.call(
            "conveyor.v1.TaskService.GetTask",
            task_service_pb2.GetTaskRequest(name=f"projects/{project}/tasks/{task_id}"),
            caller,
        )
    except V1Failed as failed:
        if failed.status.code not in (code_pb2.INVALID_ARGUMENT, code_pb2.NOT_FOUND):
            raise
        return None  # no such task, or not even the form of a task id
    return task if is_enrai(task) else None


async def _sse(ctx: CompatContext, caller: Caller, project: str, call: Any) -> AsyncIterator[bytes]:
    """The current queue state, then the new one after every change of an Enrai task."""
    pending: asyncio.Future[Any] | None = None
    try:
        yield _frame(await queue_state(ctx, caller, project))
        while True:
            if pending is None:
                pending = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
            if not done:
                yield b": keep-alive\n\n"
                continue
            message, pending = pending.result(), None
            if not isinstance(message, event_pb2.Event):
                return  # the watch ended
            if message.type.startswith("task."):
                yield _frame(await queue_state(ctx, caller, project))
    except (V1Failed, grpc.aio.AioRpcError):
        return  # the watch or a listing was refused mid-stream: end it
    finally:
        call.cancel()
        if pending is not None:
            pending.cancel()


def _frame(state: dict[str, Any]) -> bytes:
    data = json.dumps(state, separators=(",", ":"), ensure_ascii=False)
    return f"event: task_queue\ndata: {data}\n\n".encode()
