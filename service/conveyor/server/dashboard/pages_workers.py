"""Workers: queues, capacity, active tasks, last heartbeat; the five control verbs, each
followed on the page from ISSUED to SUCCEEDED, FAILED or TIMED_OUT."""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from conveyor.server.dashboard.web import View
from conveyor.v1 import command_pb2, worker_pb2

FINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT"}


async def worker_list(view: View) -> Response:
    listed = await view.call(
        view.api.workers.ListWorkers,
        worker_pb2.ListWorkersRequest(parent=view.parent, page_size=1000),
    )
    followed = view.request.query_params.get("command", "")
    command = None
    if followed:
        command = await view.call(
            view.api.commands.GetCommand,
            command_pb2.GetCommandRequest(name=f"{view.parent}/commands/{followed}"),
        )
    return view.render("workers.html", workers=list(listed.workers), command=command)


async def command_status(view: View) -> Response:
    """One command's status, as the fragment the workers page polls until it is final."""
    command = await view.call(
        view.api.commands.GetCommand,
        command_pb2.GetCommandRequest(
            name=f"{view.parent}/commands/{view.request.path_params['command']}"
        ),
    )
    return view.render("command_status.html", command=command)


def _worker(view: View) -> str:
    return str(view.request.path_params["worker"])


def _issued(command: command_pb2.Command) -> Response:
    number = command.name.rsplit("/", 1)[-1]
    return RedirectResponse(f"/ui/workers?command={quote(number)}", status_code=303)


async def control(view: View) -> Response:
    """Restart, resize, consume and stop consuming: one form, the verb in `verb`."""
    verb = view.form.get("verb", "")
    worker = _worker(view)
    key = view.form.get("idempotency_key", "")
    commands = view.api.commands
    if verb == "restart":
        command = await view.call(
            commands.RestartWorker,
            command_pb2.RestartWorkerRequest(
                parent=view.parent, worker=worker, idempotency_key=key
            ),
        )
    elif verb == "resize":
        try:
            delta = int(view.form.get("delta", "0"))
        except ValueError:
            return view.render("error.html", status=400, message="delta must be a whole number")
        command = await view.call(
            commands.ResizePool,
            command_pb2.ResizePoolRequest(
                parent=view.parent, worker=worker, delta=delta, idempotency_key=key
            ),
        )
    elif verb in ("consume", "stop-consuming"):
        request_type = (
            command_pb2.AddConsumerRequest
            if verb == "consume"
            else command_pb2.CancelConsumerRequest
        )
        method = commands.AddConsumer if verb == "consume" else commands.CancelConsumer
        command = await view.call(
            method,
            request_type(
                parent=view.parent,
                worker=worker,
                queue=view.form.get("queue", ""),
                idempotency_key=key,
            ),
        )
    else:
        return view.render("error.html", status=400, message=f"unknown worker verb {verb!r}")
    return _issued(command)


async def rate_limit(view: View) -> Response:
    command = await view.call(
        view.api.commands.SetRateLimit,
        command_pb2.SetRateLimitRequest(
            parent=view.parent,
            kind=view.form.get("kind", ""),
            rate_limit=view.form.get("rate_limit", ""),
            worker=view.form.get("worker", ""),
            idempotency_key=view.form.get("idempotency_key", ""),
        ),
    )
    return _issued(command)


ROUTES = [
    ("/ui/workers", worker_list, ["GET"]),
    ("/ui/workers/rate-limit", rate_limit, ["POST"]),
    ("/ui/workers/{worker}/control", control, ["POST"]),
    ("/ui/commands/{command}", command_status, ["GET"]),
]
