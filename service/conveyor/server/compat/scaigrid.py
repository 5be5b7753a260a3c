"""Seed 004, ScaiGrid's queue and scheduled tasks: its routes (docs/compat/004-scaigrid.md).

    POST /v1/queue/jobs                       CreateTask
    GET  /v1/queue/jobs                       ListTasks (creators: me)
    GET  /v1/queue/jobs/{job_id}              GetTask
    POST /v1/queue/jobs/{job_id}/cancel       CancelTask
    GET  /v1/queue/depth                      ListQueues
    GET  /v1/queue/observability/queues       ListApiKeys (the admin check), ListQueues
    GET  /v1/queue/hitl                       ListTasks (AWAITING_APPROVAL)
    POST /v1/queue/hitl/{request_id}/approve  ApproveTask
    POST /v1/queue/hitl/{request_id}/reject   RejectTask
    GET  /v1/queue/correlation/{id}           ListTasks (correlation_id)
    GET|POST /v1/scheduled-tasks              ListSchedules (created_by: me) | CreateSchedule
    GET|PATCH|DELETE /v1/scheduled-tasks/{task_id}

Everything is in the calling key's project. The mapping itself is scaigrid_jobs.py and
scaigrid_schedules.py; this module only makes the calls.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from conveyor.server.compat import scaigrid_jobs as jobs
from conveyor.server.compat import scaigrid_schedules as scheduled
from conveyor.server.compat.body import Fields, query_of
from conveyor.server.compat.problems import SeedApi, seed_link
from conveyor.server.compat.routing import (
    CompatContext,
    Operation,
    json_response,
    read_json,
    seed_route,
)
from conveyor.server.compat.v1 import Caller
from conveyor.v1 import enums_pb2, project_pb2, queue_pb2, schedule_pb2, task_pb2, task_service_pb2

__all__ = ["SEED", "routes"]

_T = "conveyor.v1.TaskService."
_S = "conveyor.v1.ScheduleService."
_LINKS = {
    # A next step (`refresh`, `get-existing`, `list`, `create`) links this seed's route.
    _T + "GetTask": seed_link("GET", "/v1/queue/jobs/{id}", "get_job", "tasks"),
    _T + "ListTasks": seed_link("GET", "/v1/queue/jobs", "list_jobs"),
    _S + "GetSchedule": seed_link(
        "GET", "/v1/scheduled-tasks/{id}", "get_scheduled_task", "schedules"
    ),
    _S + "ListSchedules": seed_link("GET", "/v1/scheduled-tasks", "list_scheduled_tasks"),
    _S + "CreateSchedule": seed_link("POST", "/v1/scheduled-tasks", "create_scheduled_task"),
}
SEED = SeedApi("scaigrid", fields={**jobs.JOB_RENAMES, "name": "job_id"}, links=_LINKS)
"""The jobs routes' field names (a bad job id in the path is v1's `name`)."""
_HITL = SeedApi("scaigrid", fields={**jobs.JOB_RENAMES, "name": "request_id"}, links=_LINKS)
_SCHEDULED = SeedApi(
    "scaigrid",
    fields={**scheduled.RENAMES, "name": "task_id", "schedule.name": "task_id"},
    links=_LINKS,
)


async def _optional_json(request: Request) -> Any:
    """A body the seed does not require (approve, reject): {} when none was sent."""
    if request.headers.get("content-length", "0") == "0" and (
        "transfer-encoding" not in request.headers
    ):
        return {}
    return await read_json(request)


def routes(ctx: CompatContext) -> list[BaseRoute]:
    v1 = ctx.v1

    async def project(caller: Caller) -> str:
        return await v1.project(caller)

    async def job_answer(task: task_pb2.Task, caller: Caller, status: int = 200) -> Response:
        return json_response(jobs.job_public(task), status, caller.request_id)

    async def submit(request: Request, caller: Caller) -> Response:
        body = await read_json(request)
        sent = jobs.submit_request(await project(caller), body)
        return await job_answer(await v1.call(_T + "CreateTask", sent, caller), caller, 201)

    async def page_of_jobs(
        request: Request, caller: Caller, key: str, **filters: Any
    ) -> dict[str, Any]:
        sent = jobs.list_request(await project(caller), query_of(request), **filters)
        page = await v1.call(_T + "ListTasks", sent, caller)
        public = jobs.hitl_public if key == "requests" else jobs.job_public
        return {key: [public(t) for t in page.tasks], "next_cursor": page.next_page_token or None}

    async def list_jobs(request: Request, caller: Caller) -> Response:
        return json_response(
            await page_of_jobs(request, caller, "jobs", mine=True), 200, caller.request_id
        )

    async def task_of(request: Request, caller: Caller, key: str) -> str:
        return jobs.task_name(await project(caller), request.path_params[key])

    async def get_job(request: Request, caller: Caller) -> Response:
        sent = task_service_pb2.GetTaskRequest(name=await task_of(request, caller, "job_id"))
        return await job_answer(await v1.call(_T + "GetTask", sent, caller), caller)

    async def cancel_job(request: Request, caller: Caller) -> Response:
        sent = task_service_pb2.CancelTaskRequest(name=await task_of(request, caller, "job_id"))
        return await job_answer(await v1.call(_T + "CancelTask", sent, caller), caller)

    async def queues(caller: Caller) -> list[queue_pb2.Queue]:
        parent = f"projects/{await project(caller)}"
        found: list[queue_pb2.Queue] = []
        token = ""
        while True:
            page = await v1.call(
                "conveyor.v1.QueueService.ListQueues",
                queue_pb2.ListQueuesRequest(parent=parent, page_size=1000, page_token=token),
                caller,
            )
            found.extend(page.queues)
            token = page.next_page_token
            if not token:
                return found

    async def depth(request: Request, caller: Caller) -> Response:
        return json_response(jobs.depth_public(await queues(caller)), 200, caller.request_id)

    async def observability(request: Request, caller: Caller) -> Response:
        # The seed marks observability "admin" while ListQueues is a viewer's read. The
        # route first makes a read that v1 itself grants to admins only (one key of the
        # project, discarded), so v1's interceptor refuses a lesser key with its own
        # ROLE_INSUFFICIENT and the rule stays written once, in the proto.
        await v1.call(
            "conveyor.v1.ProjectService.ListApiKeys",
            project_pb2.ListApiKeysRequest(parent=f"projects/{await project(caller)}", page_size=1),
            caller,
        )
        body = jobs.depth_public(await queues(caller), detail=True)
        return json_response(body, 200, caller.request_id)

    async def hitl(request: Request, caller: Caller) -> Response:
        body = await page_of_jobs(
            request, caller, "requests", states=[enums_pb2.TASK_STATE_AWAITING_APPROVAL]
        )
        return json_response(body, 200, caller.request_id)

    async def decide(request: Request, caller: Caller, approve: bool) -> Response:
        f = Fields(await _optional_json(request))
        name = await task_of(request, caller, "request_id")
        sent: Any
        if approve:
            sent = task_service_pb2.ApproveTaskRequest(name=name, comment=f.text("comment"))
        else:
            sent = task_service_pb2.RejectTaskRequest(name=name, reason=f.text("reason"))
        f.check()
        rpc = "ApproveTask" if approve else "RejectTask"
        return await job_answer(await v1.call(_T + rpc, sent, caller), caller)

    async def approve(request: Request, caller: Caller) -> Response:
        return await decide(request, caller, True)

    async def reject(request: Request, caller: Caller) -> Response:
        return await decide(request, caller, False)

    async def correlation(request: Request, caller: Caller) -> Response:
        correlation_id = request.path_params["correlation_id"]
        body = await page_of_jobs(request, caller, "jobs", correlation_id=correlation_id)
        return json_response({"correlation_id": correlation_id, **body}, 200, caller.request_id)

    async def schedule_name(request: Request, caller: Caller) -> str:
        return f"projects/{await project(caller)}/schedules/{request.path_params['task_id']}"

    async def list_scheduled(request: Request, caller: Caller) -> Response:
        sent = scheduled.list_request(f"projects/{await project(caller)}", query_of(request))
        page = await v1.call(_S + "ListSchedules", sent, caller)
        return json_response(
            {
                "scheduled_tasks": [scheduled.scheduled_public(s) for s in page.schedules],
                "next_cursor": page.next_page_token or None,
            },
            200,
            caller.request_id,
        )

    async def set_enabled(name: str, enabled: bool, caller: Caller) -> schedule_pb2.Schedule:
        if enabled:
            sent: Any = schedule_pb2.ResumeScheduleRequest(name=name)
            return await v1.call(_S + "ResumeSchedule", sent, caller)  # type: ignore[no-any-return]
        sent = schedule_pb2.PauseScheduleRequest(name=name, notes="enabled: false")
        return await v1.call(_S + "PauseSchedule", sent, caller)  # type: ignore[no-any-return]

    async def create_scheduled(request: Request, caller: Caller) -> Response:
        body = await read_json(request)
        sent, enabled = scheduled.create_request(f"projects/{await project(caller)}", body)
        schedule = await v1.call(_S + "CreateSchedule", sent, caller)
        if not enabled:
            schedule = await set_enabled(schedule.name, False, caller)
        return json_response(scheduled.scheduled_public(schedule), 201, caller.request_id)

    async def get_scheduled(request: Request, caller: Caller) -> Response:
        sent = schedule_pb2.GetScheduleRequest(name=await schedule_name(request, caller))
        schedule = await v1.call(_S + "GetSchedule", sent, caller)
        return json_response(scheduled.scheduled_public(schedule), 200, caller.request_id)

    async def patch_scheduled(request: Request, caller: Caller) -> Response:
        body = await read_json(request)
        name = await schedule_name(request, caller)
        sent, enabled = scheduled.update_request(name, body)
        schedule: schedule_pb2.Schedule | None = None
        if sent is not None:
            schedule = await v1.call(_S + "UpdateSchedule", sent, caller)
        if enabled is not None:
            current = schedule
            if current is None:
                current = await v1.call(
                    _S + "GetSchedule", schedule_pb2.GetScheduleRequest(name=name), caller
                )
            is_on = scheduled.scheduled_public(current)["enabled"]
            schedule = await set_enabled(name, enabled, caller) if is_on != enabled else current
        assert schedule is not None  # update_request gives a change or `enabled`
        return json_response(scheduled.scheduled_public(schedule), 200, caller.request_id)

    async def delete_scheduled(request: Request, caller: Caller) -> Response:
        sent = schedule_pb2.DeleteScheduleRequest(name=await schedule_name(request, caller))
        await v1.call(_S + "DeleteSchedule", sent, caller)
        return Response(status_code=204, headers={"X-Request-Id": caller.request_id})

    q = "/v1/queue"
    return [
        seed_route(
            ctx,
            SEED,
            f"{q}/jobs",
            {"POST": Operation("submit_job", submit), "GET": Operation("list_jobs", list_jobs)},
        ),
        seed_route(ctx, SEED, f"{q}/jobs/{{job_id}}", {"GET": Operation("get_job", get_job)}),
        seed_route(
            ctx, SEED, f"{q}/jobs/{{job_id}}/cancel", {"POST": Operation("cancel_job", cancel_job)}
        ),
        seed_route(ctx, SEED, f"{q}/depth", {"GET": Operation("queue_depth", depth)}),
        seed_route(
            ctx,
            SEED,
            f"{q}/observability/queues",
            {"GET": Operation("queue_observability", observability)},
        ),
        seed_route(ctx, _HITL, f"{q}/hitl", {"GET": Operation("list_hitl", hitl)}),
        seed_route(
            ctx,
            _HITL,
            f"{q}/hitl/{{request_id}}/approve",
            {"POST": Operation("approve_hitl", approve)},
        ),
        seed_route(
            ctx,
            _HITL,
            f"{q}/hitl/{{request_id}}/reject",
            {"POST": Operation("reject_hitl", reject)},
        ),
        seed_route(
            ctx,
            SEED,
            f"{q}/correlation/{{correlation_id}}",
            {"GET": Operation("jobs_by_correlation", correlation)},
        ),
        seed_route(
            ctx,
            _SCHEDULED,
            "/v1/scheduled-tasks",
            {
                "GET": Operation("list_scheduled_tasks", list_scheduled),
                "POST": Operation("create_scheduled_task", create_scheduled),
            },
        ),
        seed_route(
            ctx,
            _SCHEDULED,
            "/v1/scheduled-tasks/{task_id}",
            {
                "GET": Operation("get_scheduled_task", get_scheduled),
                "PATCH": Operation("update_scheduled_task", patch_scheduled),
                "DELETE": Operation("delete_scheduled_task", delete_scheduled),
            },
        ),
    ]
