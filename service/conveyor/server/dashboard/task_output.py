"""Live output of running tasks: the tail of an attempt's log (its handler's ctx.log lines
and captured stdout and stderr) on the task page and under each running task of the
Queue tab. Read newest first (ListTaskLogs order_by `seq desc`), so a long log costs one
small page, and refreshed as progress is: every two seconds while the task runs."""

from __future__ import annotations

from starlette.responses import Response

from conveyor.server.dashboard.web import View
from conveyor.v1 import task_pb2, task_service_pb2

__all__ = ["QUEUE_TAIL", "ROUTES", "TAIL", "tail"]

TAIL = 200
"""Lines the task page shows."""
QUEUE_TAIL = 8
"""Lines shown under a running task of the Queue tab."""


async def tail(view: View, task: task_pb2.Task, limit: int) -> list[task_service_pb2.TaskLogLine]:
    """The last `limit` lines of the task's current attempt, oldest first."""
    if task.attempt <= 0:
        return []
    page = await view.call(
        view.api.tasks.ListTaskLogs,
        task_service_pb2.ListTaskLogsRequest(
            name=task.name, attempt=task.attempt, page_size=limit, order_by="seq desc"
        ),
    )
    return list(reversed(page.lines))


async def output(view: View) -> Response:
    """The task page's output card alone, which the page refreshes while the task runs."""
    name = f"{view.parent}/tasks/{view.request.path_params['task']}"
    task = await view.call(view.api.tasks.GetTask, task_service_pb2.GetTaskRequest(name=name))
    return view.render("task_output.html", task=task, lines=await tail(view, task, TAIL))


ROUTES = [("/ui/tasks/{task}/output", output, ["GET"])]
