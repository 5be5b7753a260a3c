"""Seed 003, the scheduled-tasks API: its routes (docs/compat/003-scheduled-tasks.md).

    POST /tasks                    CreateSchedule
    GET  /tasks                    ListSchedules (limit, offset)
    GET  /tasks/{id}               GetSchedule
    PUT  /tasks/{id}               UpdateSchedule (the fields present)
    POST /tasks/{id}/run_now       RunScheduleNow
    POST /tasks/{id}/snooze        SnoozeSchedule
    POST /tasks/{id}/pause|resume|cancel

A seed task is a Schedule of the caller's key's project. The mapping itself is
scheduled_task_fields.py; this module only makes the calls.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from conveyor.server.compat import scheduled_task_fields as fields
from conveyor.server.compat.body import query_of, rfc3339
from conveyor.server.compat.problems import SeedApi, seed_link
from conveyor.server.compat.routing import (
    CompatContext,
    Operation,
    json_response,
    read_json,
    seed_route,
)
from conveyor.server.compat.v1 import Caller
from conveyor.v1 import enums_pb2, schedule_pb2, task_pb2

__all__ = ["SEED", "routes"]

_S = "conveyor.v1.ScheduleService."
SEED = SeedApi(
    "scheduled-tasks",
    fields={**fields.RENAMES, "name": "id", "schedule.name": "id"},
    links={
        # A next step (`refresh`, `get-existing`, `list`, `create`) links this seed's route.
        _S + "GetSchedule": seed_link("GET", "/tasks/{id}", "get_task", "schedules"),
        _S + "ListSchedules": seed_link("GET", "/tasks", "list_tasks"),
        _S + "CreateSchedule": seed_link("POST", "/tasks", "create_task"),
    },
)


def _run_public(task: task_pb2.Task, schedule_id: str) -> dict[str, object]:
    state = enums_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_").lower()
    return {
        "task_id": schedule_id,
        "run": {
            "id": task.name.rsplit("/", 1)[-1],
            "state": state,
            "created_at": rfc3339(task, "create_time"),
        },
    }


def routes(ctx: CompatContext) -> list[BaseRoute]:
    v1 = ctx.v1

    async def name_of(request: Request, caller: Caller) -> str:
        project = await v1.project(caller)
        return f"projects/{project}/schedules/{request.path_params['id']}"

    async def create(request: Request, caller: Caller) -> Response:
        body = await read_json(request)
        parent = f"projects/{await v1.project(caller)}"
        # An Idempotency-Key header makes a retried POST return the first task (v1's
        # request_id); the seed has none, so this is only for clients that send one.
        key = request.headers.get("idempotency-key", "")
        sent = fields.create_request(parent, body, key)
        schedule = await v1.call(_S + "CreateSchedule", sent, caller)
        return json_response(fields.task_public(schedule), 201, caller.request_id)

    async def list_tasks(request: Request, caller: Caller) -> Response:
        parent = f"projects/{await v1.project(caller)}"
        sent, limit, offset = fields.list_request(parent, query_of(request))
        held: list[schedule_pb2.Schedule] = []
        token = ""
        while (want := fields.page_window(offset, limit, len(held))) > 0:
            sent.page_size, sent.page_token = want, token
            page = await v1.call(_S + "ListSchedules", sent, caller)
            held.extend(page.schedules)
            token = page.next_page_token
            if not token:
                break
        window = held[offset : offset + limit]
        more = len(held) > offset + limit
        return json_response(
            {
                "tasks": [fields.task_public(s) for s in window],
                "limit": limit,
                "offset": offset,
                "next_offset": offset + limit if more else None,
            },
            200,
            caller.request_id,
        )

    async def get(request: Request, caller: Caller) -> Response:
        sent = schedule_pb2.GetScheduleRequest(name=await name_of(request, caller))
        schedule = await v1.call(_S + "GetSchedule", sent, caller)
        return json_response(fields.task_public(schedule), 200, caller.request_id)

    async def update(request: Request, caller: Caller) -> Response:
        body = await read_json(request)
        sent = fields.update_request(await name_of(request, caller), body)
        schedule = await v1.call(_S + "UpdateSchedule", sent, caller)
        return json_response(fields.task_public(schedule), 200, caller.request_id)

    async def run_now(request: Request, caller: Caller) -> Response:
        name = await name_of(request, caller)
        task = await v1.call(
            _S + "RunScheduleNow", schedule_pb2.RunScheduleNowRequest(name=name), caller
        )
        return json_response(_run_public(task, request.path_params["id"]), 202, caller.request_id)

    async def snooze(request: Request, caller: Caller) -> Response:
        body = await read_json(request)
        sent = fields.snooze_request(await name_of(request, caller), body)
        schedule = await v1.call(_S + "SnoozeSchedule", sent, caller)
        return json_response(fields.task_public(schedule), 200, caller.request_id)

    def state_change(
        operation_id: str,
        rpc: str,
        message: type[schedule_pb2.PauseScheduleRequest]
        | type[schedule_pb2.ResumeScheduleRequest]
        | type[schedule_pb2.CancelScheduleRequest],
    ) -> Operation:
        async def change(request: Request, caller: Caller) -> Response:
            sent = message(name=await name_of(request, caller))
            schedule = await v1.call(_S + rpc, sent, caller)
            return json_response(fields.task_public(schedule), 200, caller.request_id)

        return Operation(operation_id, change)

    one = "/tasks/{id}"
    return [
        seed_route(
            ctx,
            SEED,
            "/tasks",
            {"GET": Operation("list_tasks", list_tasks), "POST": Operation("create_task", create)},
        ),
        seed_route(
            ctx,
            SEED,
            one,
            {"GET": Operation("get_task", get), "PUT": Operation("update_task", update)},
        ),
        seed_route(ctx, SEED, f"{one}/run_now", {"POST": Operation("run_task_now", run_now)}),
        seed_route(ctx, SEED, f"{one}/snooze", {"POST": Operation("snooze_task", snooze)}),
        seed_route(
            ctx,
            SEED,
            f"{one}/pause",
            {
                "POST": state_change(
                    "pause_task", "PauseSchedule", schedule_pb2.PauseScheduleRequest
                )
            },
        ),
        seed_route(
            ctx,
            SEED,
            f"{one}/resume",
            {
                "POST": state_change(
                    "resume_task", "ResumeSchedule", schedule_pb2.ResumeScheduleRequest
                )
            },
        ),
        seed_route(
            ctx,
            SEED,
            f"{one}/cancel",
            {
                "POST": state_change(
                    "cancel_task", "CancelSchedule", schedule_pb2.CancelScheduleRequest
                )
            },
        ),
    ]
