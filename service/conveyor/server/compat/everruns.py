"""Seed 002, Everruns: enqueue a standalone durable task (docs/compat/002-everruns.md).

    POST /api/v1/durable/tasks
    {"activity_type": "session.run", "input": <any JSON>,
     "options": {"max_attempts": 3, "priority": 10}}
    -> 201 {"task_id": "<id>"}

One v1 call: TaskService.CreateTask in the caller's project, queue `default`, with
`kind` = activity_type, `input` = input (any JSON shape), `retry_policy.max_attempts`
= options.max_attempts and `priority` from options.priority (Everruns: larger is more
urgent, 0 normal; Conveyor: 1..9, 1 most urgent; see priority()).
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from conveyor.server.compat.problems import SeedApi
from conveyor.server.compat.routing import (
    BadSeedInput,
    CompatContext,
    Operation,
    json_response,
    read_json,
    seed_route,
)
from conveyor.server.compat.v1 import Caller
from conveyor.v1 import task_pb2

__all__ = ["SEED", "priority", "routes", "task_of"]

SEED = SeedApi(
    "everruns",
    fields={
        "task.kind": "activity_type",
        "task.input": "input",
        "task.priority": "options.priority",
        "task.retry_policy.max_attempts": "options.max_attempts",
        "task.retry_policy": "options",
    },
)
ENQUEUE = "enqueue_durable_task"
"""The operation id of the seed's enqueue (Everruns publishes none; this one is ours)."""


def priority(value: int) -> int:
    """Everruns priority (larger is more urgent, 0 the default) -> Conveyor's 1..9
    (1 most urgent, 5 normal): 0 -> 5, each 2.5 above 0 one step more urgent, so the
    seed's 10 -> 1; negative values the other way, -10 -> 9; beyond, clamped."""
    return max(1, min(9, 5 - math.floor(value / 2.5)))


def task_of(body: Any) -> task_pb2.Task:
    """The v1 Task for an Everruns enqueue body; BadSeedInput when a field has the wrong
    JSON type (what v1 checks, v1 checks: an empty activity_type, limits, input size)."""
    if not isinstance(body, dict):
        raise BadSeedInput.of("body", "must be a JSON object")
    task = task_pb2.Task()
    kind = body.get("activity_type")
    if kind is not None and not isinstance(kind, str):
        raise BadSeedInput.of("activity_type", "must be a string")
    task.kind = kind or ""
    if body.get("input") is not None:
        try:
            json_format.ParseDict(body["input"], task.input)
            # json_format leaves an empty object or array unset; keep it as sent.
            if body["input"] == {}:
                task.input.struct_value.SetInParent()
            elif body["input"] == []:
                task.input.list_value.SetInParent()
        except (json_format.ParseError, RecursionError) as error:
            raise BadSeedInput.of("input", f"cannot be stored: {error}") from None
    options = body.get("options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadSeedInput.of("options", "must be a JSON object")
        attempts = options.get("max_attempts")
        if attempts is not None:
            task.retry_policy.max_attempts = _int(attempts, "options.max_attempts")
        urgency = options.get("priority")
        if urgency is not None:
            task.priority = priority(_int(urgency, "options.priority"))
    return task


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise BadSeedInput.of(field, "must be an integer")
    if not -(2**31) <= value < 2**31:
        raise BadSeedInput.of(field, "must fit in 32 bits")
    return int(value)


def routes(ctx: CompatContext) -> list[BaseRoute]:
    async def enqueue(request: Request, caller: Caller) -> Response:
        created = await ctx.v1.create_task(caller, task_of(await read_json(request)))
        task_id = created.name.rsplit("/", 1)[-1]
        return json_response({"task_id": task_id}, 201, caller.request_id)

    return [seed_route(ctx, SEED, "/api/v1/durable/tasks", {"POST": Operation(ENQUEUE, enqueue)})]
