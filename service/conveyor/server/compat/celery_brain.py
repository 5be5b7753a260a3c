"""Seed 001, the Celery admin API ("brain"): its routes (docs/compat/001-celery-brain.md).

    GET  /api/v1/projects/{slug}/tasks                      ListTasks | ExportTasks
    GET  /api/v1/projects/{slug}/tasks/{engine}/{task_id}   GetTask
    GET  .../tasks/{engine}/{task_id}/tree                  GetTaskTree
    POST /api/v1/projects/{slug}/tasks/bulk-delete          BatchDeleteTasks
    GET  /api/v1/projects/{slug}/commands[/{command_id}]    ListCommands | GetCommand
    POST /api/v1/projects/{slug}/commands/<the nine>        CommandService | CancelTask

`{slug}` is the project id. The mapping itself is celery_tasks.py and
celery_commands.py; this module only makes the calls.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from conveyor.server.compat import celery_commands as commands
from conveyor.server.compat import celery_tasks as tasks
from conveyor.server.compat.body import check, query_of, value_of
from conveyor.server.compat.problems import SeedApi, seed_link
from conveyor.server.compat.routing import (
    BadSeedInput,
    CompatContext,
    Operation,
    json_response,
    read_json,
    seed_route,
)
from conveyor.server.compat.v1 import Caller, V1Failed
from conveyor.server.errors import Violations
from conveyor.server.gateway import streaming
from conveyor.server.gateway.jsonform import to_json
from conveyor.server.gateway.problems import status_of
from conveyor.v1 import command_pb2, enums_pb2, task_pb2, task_service_pb2

__all__ = ["SEED", "routes"]

_RENAMES = {
    "filter.states": "state",
    "filter.priorities": "priority",
    "filter.kinds": "name",
    "filter.queues": "queue",
    "filter.workers": "worker",
    "filter.search": "search",
    "filter.create_time_after": "since",
    "filter.create_time_before": "until",
    "page_size": "limit",
    "page_token": "cursor",
    "names": "task_ids",
    "name": "task_id",
}
_TASKS = "conveyor.v1.TaskService."
_BASE = "/api/v1/projects/{slug}"
_LINKS = {
    # A next step (`refresh`, `get-existing`, `list`) links this seed's route; the slug
    # is the project id.
    _TASKS + "GetTask": seed_link(
        "GET", f"/api/v1/projects/{{project}}/tasks/{tasks.ENGINE}/{{id}}", "get_task", "tasks"
    ),
    _TASKS + "ListTasks": seed_link("GET", "/api/v1/projects/{project}/tasks", "list_tasks"),
}
SEED = SeedApi("celery-brain", fields=_RENAMES, links=_LINKS)
_BULK_DELETE = SeedApi(
    "celery-brain",
    links=_LINKS,
    fields={
        **_RENAMES,
        "filter.states": "filter_state",
        "filter.kinds": "filter_name",
        "filter.queues": "filter_queue",
        "filter.create_time_after": "filter_since",
        "filter.create_time_before": "filter_until",
    },
)
_EXTENSIONS = {enums_pb2.EXPORT_FORMAT_CSV: "csv", enums_pb2.EXPORT_FORMAT_XLSX: "xlsx"}


def _engine(request: Request) -> None:
    engine = request.path_params["engine"]
    if engine != tasks.ENGINE:
        raise BadSeedInput.of(
            "engine", f"must be {tasks.ENGINE!r}: Conveyor is this brain's engine"
        )


def routes(ctx: CompatContext) -> list[BaseRoute]:
    v1 = ctx.v1

    async def list_tasks(request: Request, caller: Caller) -> Response:
        slug = request.path_params["slug"]
        q = query_of(request)
        file_format = tasks.format_of(q)
        if file_format is not None:
            return await _export(tasks.export_request(slug, q, file_format), caller)
        v = Violations()
        fields = tasks.fields_of(q, v)
        check(v)
        page = await v1.call(_TASKS + "ListTasks", tasks.list_request(slug, q), caller)
        # v1's SCHEDULED is both received (a later ETA) and retried (a retry backoff);
        # only the states asked for are kept, so a page may be short (its cursor holds).
        asked = tasks.states_asked(q)
        items = [
            tasks.project_fields(tasks.task_public(t, slug), fields)
            for t in page.tasks
            if not asked or tasks.state_name(t) in asked
        ]
        return json_response(
            {"items": items, "next_cursor": page.next_page_token or None}, 200, caller.request_id
        )

    async def _export(request: task_service_pb2.ExportTasksRequest, caller: Caller) -> Response:
        stream = streaming.MessageStream(v1.stream(_TASKS + "ExportTasks", request, caller))
        try:
            started = await stream.start(None)
        except grpc.aio.AioRpcError as error:
            stream.cancel()
            raise V1Failed(_TASKS + "ExportTasks", status_of(error), request) from None
        except BaseException:
            stream.cancel()
            raise
        headers = {"X-Request-Id": caller.request_id, "Cache-Control": "no-store"}
        first = started.first
        if not isinstance(first, httpbody_pb2.HttpBody):
            stream.cancel()
            return Response(status_code=204, headers=headers)
        name = f"tasks.{_EXTENSIONS.get(request.format, 'bin')}"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return StreamingResponse(
            streaming.raw_body(stream, first), media_type=first.content_type, headers=headers
        )

    async def get_task(request: Request, caller: Caller) -> Response:
        _engine(request)
        slug, task_id = request.path_params["slug"], request.path_params["task_id"]
        task = await v1.call(
            _TASKS + "GetTask",
            task_service_pb2.GetTaskRequest(name=tasks.task_name(slug, task_id)),
            caller,
        )
        return json_response(tasks.task_public(task, slug), 200, caller.request_id)

    async def tree(request: Request, caller: Caller) -> Response:
        _engine(request)
        slug, task_id = request.path_params["slug"], request.path_params["task_id"]
        found = await v1.call(
            _TASKS + "GetTaskTree",
            task_service_pb2.GetTaskTreeRequest(name=tasks.task_name(slug, task_id)),
            caller,
        )
        return json_response(tasks.tree_public(found, slug), 200, caller.request_id)

    async def bulk_delete(request: Request, caller: Caller) -> Response:
        slug = request.path_params["slug"]
        names, found = tasks.bulk_delete_request(slug, await read_json(request))
        delete = task_service_pb2.BatchDeleteTasksRequest(parent=tasks.project_of(slug))
        if names and found is not None:
            names = await _matching(slug, names, found, caller)
            if not names:
                # Nothing to delete, but the call still goes to v1 so that the role is
                # checked and the request recorded as any other: no terminal task is
                # QUEUED, so this filter deletes nothing.
                delete.filter.states.append(enums_pb2.TASK_STATE_QUEUED)
        if names:
            delete.names.extend(names)
        elif not delete.HasField("filter") and found is not None:
            delete.filter.CopyFrom(found)
        deleted = await v1.call(_TASKS + "BatchDeleteTasks", delete, caller)
        return json_response({"deleted_count": deleted.deleted_count}, 200, caller.request_id)

    async def _matching(
        slug: str, names: list[str], found: task_pb2.TaskFilter, caller: Caller
    ) -> list[str]:
        """The named tasks that the filter matches, by v1's own matching (ListTasks)."""
        wanted = set(names)
        matched: list[str] = []
        token = ""
        while wanted:
            page = await v1.call(
                _TASKS + "ListTasks",
                task_service_pb2.ListTasksRequest(
                    parent=tasks.project_of(slug),
                    filter=found,
                    page_size=5000,
                    page_token=token,
                    view=enums_pb2.TASK_VIEW_BASIC,
                ),
                caller,
            )
            for task in page.tasks:
                if task.name in wanted:
                    wanted.discard(task.name)
                    matched.append(task.name)
            token = page.next_page_token
            if not token:
                break
        return matched

    async def list_commands(request: Request, caller: Caller) -> Response:
        slug = request.path_params["slug"]
        page = await v1.call(
            "conveyor.v1.CommandService.ListCommands",
            commands.list_request(slug, query_of(request)),
            caller,
        )
        return json_response(
            {
                "items": [commands.command_public(c, slug) for c in page.commands],
                "next_cursor": page.next_page_token or None,
            },
            200,
            caller.request_id,
        )

    async def get_command(request: Request, caller: Caller) -> Response:
        slug = request.path_params["slug"]
        command = await v1.call(
            "conveyor.v1.CommandService.GetCommand",
            command_pb2.GetCommandRequest(
                name=f"projects/{slug}/commands/{request.path_params['command_id']}"
            ),
            caller,
        )
        return json_response(commands.command_public(command, slug), 200, caller.request_id)

    def command(action: str) -> Operation:
        spec = commands.COMMANDS[action]

        async def issue(request: Request, caller: Caller) -> Response:
            slug = request.path_params["slug"]
            sent = commands.build(action, slug, await read_json(request))
            if isinstance(sent, command_pb2.RetryTaskRequest) and sent.HasField("override_input"):
                # override_kwargs replaces the kwargs only: the args are the task's own.
                current = await v1.call(
                    _TASKS + "GetTask", task_service_pb2.GetTaskRequest(name=sent.task), caller
                )
                kwargs = to_json(sent.override_input)
                sent.override_input.CopyFrom(value_of(tasks.with_kwargs(current, kwargs)))
            answer = await v1.call(spec.rpc, sent, caller)
            if isinstance(answer, task_pb2.Task):
                # CancelTask answers the task; the brain answers the command it recorded.
                answer = await _cancel_command(slug, answer.name, caller) or answer
            if isinstance(answer, task_pb2.Task):
                return json_response(
                    {"task": tasks.task_public(answer, slug)}, 202, caller.request_id
                )
            return json_response(commands.command_public(answer, slug), 202, caller.request_id)

        return Operation(action.replace("-", "_"), issue)

    async def _cancel_command(slug: str, task: str, caller: Caller) -> Any:
        page = await v1.call(
            "conveyor.v1.CommandService.ListCommands",
            command_pb2.ListCommandsRequest(
                parent=tasks.project_of(slug),
                filter=command_pb2.CommandFilter(verbs=[enums_pb2.COMMAND_VERB_CANCEL_TASK]),
                page_size=50,
            ),
            caller,
        )
        return next((c for c in page.commands if c.target == task), None)

    out: list[BaseRoute] = [
        seed_route(ctx, SEED, f"{_BASE}/tasks", {"GET": Operation("list_tasks", list_tasks)}),
        seed_route(
            ctx,
            _BULK_DELETE,
            f"{_BASE}/tasks/bulk-delete",
            {"POST": Operation("bulk_delete_tasks", bulk_delete)},
        ),
        seed_route(
            ctx,
            SEED,
            f"{_BASE}/tasks/{{engine}}/{{task_id}}",
            {"GET": Operation("get_task", get_task)},
        ),
        seed_route(
            ctx,
            SEED,
            f"{_BASE}/tasks/{{engine}}/{{task_id}}/tree",
            {"GET": Operation("get_task_tree", tree)},
        ),
        seed_route(
            ctx, SEED, f"{_BASE}/commands", {"GET": Operation("list_commands", list_commands)}
        ),
    ]
    # The nine verbs before /commands/{command_id}, which would take their paths.
    for action, spec in commands.COMMANDS.items():
        seed = SeedApi("celery-brain", fields={**_RENAMES, **spec.renames}, links=_LINKS)
        out.append(seed_route(ctx, seed, f"{_BASE}/commands/{action}", {"POST": command(action)}))
    out.append(
        seed_route(
            ctx,
            SeedApi("celery-brain", fields={"name": "command_id"}),
            f"{_BASE}/commands/{{command_id}}",
            {"GET": Operation("get_command", get_command)},
        )
    )
    return out
