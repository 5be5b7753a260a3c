"""A task's page (input, result, output, attempts, timeline, tree) and its actions: cancel,
retry with an optional input override, approve and reject with a comment."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from starlette.responses import Response

from conveyor.server.dashboard import pages_task_list, task_output
from conveyor.server.dashboard.web import View, back
from conveyor.v1 import command_pb2, enums_pb2, event_pb2, task_pb2, task_service_pb2

TIMELINE_LIMIT = 500


def _name(view: View) -> str:
    return f"{view.parent}/tasks/{view.request.path_params['task']}"


async def task_page(view: View) -> Response:
    name = _name(view)
    task = await view.call(view.api.tasks.GetTask, task_service_pb2.GetTaskRequest(name=name))
    tree = await view.call(
        view.api.tasks.GetTaskTree, task_service_pb2.GetTaskTreeRequest(name=name)
    )
    timeline = await view.call(
        view.api.events.ListEvents,
        event_pb2.ListEventsRequest(
            parent=view.parent,
            filter=event_pb2.EventFilter(tasks=[name]),
            page_size=TIMELINE_LIMIT,
        ),
    )
    return view.render(
        "task.html",
        task=task,
        tree=_nest(list(tree.tasks)),
        truncated=tree.truncated,
        tree_size=len(tree.tasks),
        dependencies=list(tree.dependencies),
        timeline=list(timeline.events),
        more_events=bool(timeline.next_page_token),
        lines=await task_output.tail(view, task, task_output.TAIL),
    )


def _nest(tasks: list[task_pb2.Task]) -> list[dict[str, Any]]:
    """The flat tree as nested nodes {task, children}, roots first."""
    nodes: dict[str, dict[str, Any]] = {t.name: {"task": t, "children": []} for t in tasks}
    roots: list[dict[str, Any]] = []
    for task in tasks:
        parent = nodes.get(task.parent_task)
        siblings: list[dict[str, Any]] = parent["children"] if parent is not None else roots
        siblings.append(nodes[task.name])
    return roots


async def cancel(view: View) -> Response:
    task = await view.call(
        view.api.tasks.CancelTask,
        task_service_pb2.CancelTaskRequest(name=_name(view), reason=view.form.get("reason", "")),
    )
    # A running task is only asked to stop: its worker learns it at its next heartbeat.
    notice = (
        "Cancel requested: the worker stops the task at its next heartbeat."
        if task.state == enums_pb2.TASK_STATE_RUNNING
        else "Task cancelled."
    )
    return back(view, view.request.url.path.rsplit("/", 1)[0], notice)


async def approve(view: View) -> Response:
    return await _decide(view, approved=True)


async def reject(view: View) -> Response:
    return await _decide(view, approved=False)


async def _decide(view: View, *, approved: bool) -> Response:
    """Approve or reject, with the form's comment (a rejection's reason)."""
    comment = view.form.get("comment", "")
    if approved:
        await view.call(
            view.api.tasks.ApproveTask,
            task_service_pb2.ApproveTaskRequest(name=_name(view), comment=comment),
        )
    else:
        await view.call(
            view.api.tasks.RejectTask,
            task_service_pb2.RejectTaskRequest(name=_name(view), reason=comment),
        )
    notice = "Task approved." if approved else "Task rejected."
    return back(view, view.request.url.path.rsplit("/", 1)[0], notice)


async def retry(view: View) -> Response:
    request = command_pb2.RetryTaskRequest(
        parent=view.parent, task=_name(view), idempotency_key=view.form.get("idempotency_key", "")
    )
    override = view.form.get("override_input", "").strip()
    if override:
        try:
            json_format.Parse(override, request.override_input)
        except json_format.ParseError as error:
            return view.render(
                "error.html", status=400, message=f"The input override is not JSON: {error}"
            )
    command = await view.call(view.api.commands.RetryTask, request)
    return back(view, view.request.url.path.rsplit("/", 1)[0], f"Retry requested ({command.name}).")


ROUTES = [
    *pages_task_list.ROUTES,
    *task_output.ROUTES,
    ("/ui/tasks/{task}", task_page, ["GET"]),
    ("/ui/tasks/{task}/cancel", cancel, ["POST"]),
    ("/ui/tasks/{task}/approve", approve, ["POST"]),
    ("/ui/tasks/{task}/reject", reject, ["POST"]),
    ("/ui/tasks/{task}/retry", retry, ["POST"]),
]
