"""Queues: the overview at `/`, a queue's page with its live tabs, pause, resume, purge."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from starlette.responses import Response, StreamingResponse

from conveyor.server.dashboard.formats import TERMINAL_STATES
from conveyor.server.dashboard.pages_webhooks import webhook_block
from conveyor.server.dashboard.task_output import QUEUE_TAIL, tail
from conveyor.server.dashboard.web import View, back
from conveyor.server.domain.events import KEEPALIVE_TYPE
from conveyor.v1 import (
    command_pb2,
    enums_pb2,
    event_pb2,
    queue_pb2,
    task_pb2,
    task_service_pb2,
)

THROUGHPUT_MINUTES = 10
RUNNING_DETAIL = 20
THROUGHPUT_SAMPLE = 1000
KEEP_ALIVE_SECONDS = 15.0
_WAITING = [
    enums_pb2.TASK_STATE_QUEUED,
    enums_pb2.TASK_STATE_SCHEDULED,
    enums_pb2.TASK_STATE_AWAITING_APPROVAL,
]


async def overview(view: View) -> Response:
    listed = await view.call(
        view.api.queues.ListQueues, queue_pb2.ListQueuesRequest(parent=view.parent, page_size=1000)
    )
    context: dict[str, Any] = {
        "queues": list(listed.queues),
        "throughput": await _throughput(view),
        "minutes": THROUGHPUT_MINUTES,
    }
    if view.request.query_params.get("fragment"):
        return view.render("queues_live.html", **context)
    return view.render("queues.html", webhooks=await webhook_block(view), **context)


async def _throughput(view: View) -> dict[str, list[int]]:
    """Finished tasks per minute over the last minutes, per queue id (oldest first),
    counted over at most THROUGHPUT_SAMPLE recently created tasks."""
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(now - timedelta(minutes=THROUGHPUT_MINUTES + 5))
    listed = await view.call(
        view.api.tasks.ListTasks,
        task_service_pb2.ListTasksRequest(
            parent=view.parent,
            filter=task_pb2.TaskFilter(states=TERMINAL_STATES, create_time_after=since),
            page_size=THROUGHPUT_SAMPLE,
            order_by="create_time desc",
        ),
    )
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * THROUGHPUT_MINUTES)
    for task in listed.tasks:
        if not task.HasField("end_time"):
            continue
        age = (now - task.end_time.ToDatetime(tzinfo=UTC)).total_seconds() // 60
        if 0 <= age < THROUGHPUT_MINUTES:
            counts[task.queue][THROUGHPUT_MINUTES - 1 - int(age)] += 1
    return counts


async def queue_page(view: View) -> Response:
    queue_id = view.request.path_params["queue"]
    name = f"{view.parent}/queues/{queue_id}"
    queue = await view.call(view.api.queues.GetQueue, queue_pb2.GetQueueRequest(name=name))
    running, waiting, completed = await asyncio.gather(
        _tasks(view, queue_id, [enums_pb2.TASK_STATE_RUNNING], "create_time", 200),
        _tasks(view, queue_id, _WAITING, "priority", 200),
        _tasks(view, queue_id, TERMINAL_STATES, "create_time desc", 50),
    )
    # The list view has no attempts; each running task's own answer carries the progress
    # its handler reported, the live output shown under it.
    detailed = await asyncio.gather(
        *(
            view.call(view.api.tasks.GetTask, task_service_pb2.GetTaskRequest(name=t.name))
            for t in running[:RUNNING_DETAIL]
        )
    )
    # Their output: the last lines each one's handler logged or printed.
    tails = await asyncio.gather(*(tail(view, t, QUEUE_TAIL) for t in detailed))
    outputs = {t.name: lines for t, lines in zip(detailed, tails, strict=True)}
    running = [*detailed, *running[RUNNING_DETAIL:]]
    context = {
        "outputs": outputs,
        "queue": queue,
        "queue_id": queue_id,
        "running": running,
        "waiting": waiting,
        "completed": completed,
    }
    if view.request.query_params.get("fragment"):
        return view.render("queue_live.html", **context)
    return view.render("queue.html", webhooks=await webhook_block(view), **context)


async def _tasks(
    view: View,
    queue_id: str,
    states: list[enums_pb2.TaskState.ValueType],
    order_by: str,
    limit: int,
) -> list[task_pb2.Task]:
    listed = await view.call(
        view.api.tasks.ListTasks,
        task_service_pb2.ListTasksRequest(
            parent=view.parent,
            filter=task_pb2.TaskFilter(states=states, queues=[queue_id]),
            page_size=limit,
            order_by=order_by,
        ),
    )
    return list(listed.tasks)


async def pause(view: View) -> Response:
    name = f"{view.parent}/queues/{view.request.path_params['queue']}"
    await view.call(
        view.api.queues.PauseQueue,
        queue_pb2.PauseQueueRequest(name=name, reason=view.form.get("reason", "")),
    )
    return back(view, "/", "Queue paused.")


async def resume(view: View) -> Response:
    name = f"{view.parent}/queues/{view.request.path_params['queue']}"
    await view.call(view.api.queues.ResumeQueue, queue_pb2.ResumeQueueRequest(name=name))
    return back(view, "/", "Queue resumed.")


async def update(view: View) -> Response:
    """Sends only the fields the operator changed, named in the update mask."""
    queue_id = view.request.path_params["queue"]
    queue = queue_pb2.Queue(name=f"{view.parent}/queues/{queue_id}")
    mask = field_mask_pb2.FieldMask()
    rate = view.form.get("rate_limit")
    if rate is not None and rate != view.form.get("old_rate_limit"):
        queue.rate_limit = rate.strip()
        mask.paths.append("rate_limit")
    concurrency = view.form.get("max_concurrency")
    if concurrency is not None and concurrency != view.form.get("old_max_concurrency"):
        try:
            queue.max_concurrency = int(concurrency or "0")
        except ValueError:
            return view.render(
                "error.html", status=400, message="max_concurrency must be a whole number"
            )
        mask.paths.append("max_concurrency")
    if mask.paths:
        await view.call(
            view.api.queues.UpdateQueue,
            queue_pb2.UpdateQueueRequest(queue=queue, update_mask=mask),
        )
    return back(view, f"/ui/queues/{queue_id}", "Queue updated." if mask.paths else "")


async def purge_confirm(view: View) -> Response:
    """Shows the depth the purge will remove; the form carries its confirm token."""
    queue_id = view.request.path_params["queue"]
    queue = await view.call(
        view.api.queues.GetQueue, queue_pb2.GetQueueRequest(name=f"{view.parent}/queues/{queue_id}")
    )
    return view.render("purge.html", queue=queue, queue_id=queue_id)


async def purge(view: View) -> Response:
    queue_id = view.request.path_params["queue"]
    try:
        command = await view.call(
            view.api.commands.PurgeQueue,
            command_pb2.PurgeQueueRequest(
                parent=view.parent,
                queue=queue_id,
                confirm_token=view.form.get("confirm_token", ""),
                idempotency_key=view.form.get("idempotency_key", ""),
            ),
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        # The depth changed since it was shown: show the new one to confirm again.
        queue = await view.call(
            view.api.queues.GetQueue,
            queue_pb2.GetQueueRequest(name=f"{view.parent}/queues/{queue_id}"),
        )
        return view.render(
            "purge.html", status=412, queue=queue, queue_id=queue_id, refused=error.details()
        )
    purged = int(command.result.fields["purged"].number_value) if command.result else 0
    return back(view, f"/ui/queues/{queue_id}", f"Purged {purged} queued tasks.")


async def events(view: View) -> Response:
    """Server-Sent Events for one queue (or the project): each carries the event's type;
    the page then reloads its live part. Ends when the server shuts down."""
    queue_id = view.request.query_params.get("queue", "")
    task_filter = task_pb2.TaskFilter(queues=[queue_id] if queue_id else [])
    # EventSource sends the last id it saw when it reconnects: resume there.
    resume = view.request.headers.get("last-event-id", "")
    request = event_pb2.WatchEventsRequest(
        parent=view.parent,
        filter=event_pb2.EventFilter(types=["task.*", "queue.*"], task_filter=task_filter),
        after=int(resume) if resume.isdigit() else 0,
    )

    async def stream() -> AsyncIterator[str]:
        call = view.api.stream(view.api.events.WatchEvents, request)
        received: asyncio.Queue[event_pb2.Event | None] = asyncio.Queue(maxsize=1000)

        async def pump() -> None:
            try:
                async for event in call:
                    await received.put(event)
            except grpc.aio.AioRpcError:
                pass
            finally:
                await received.put(None)

        async def stop_on_shutdown() -> None:
            await view.stopping.wait()
            await received.put(None)

        tasks = [asyncio.create_task(pump()), asyncio.create_task(stop_on_shutdown())]
        yield ": connected\n\n"
        ready = False
        try:
            while True:
                try:
                    event = await asyncio.wait_for(received.get(), KEEP_ALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    return
                if event.type == KEEPALIVE_TYPE:
                    # The first one says the watch is subscribed: the page refreshes once
                    # then, so nothing between its render and this moment is missed.
                    kind = "ready" if not ready else "position"
                    ready = True
                    yield f"id: {event.id}\nevent: {kind}\ndata: {{}}\n\n"
                    continue
                data = json.dumps({"type": event.type, "subject": event.subject})
                yield f"id: {event.id}\ndata: {data}\n\n"
        finally:
            call.cancel()
            for task in tasks:
                task.cancel()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


ROUTES = [
    ("/", overview, ["GET"]),
    ("/ui/queues", overview, ["GET"]),
    ("/ui/queues/{queue}", queue_page, ["GET"]),
    ("/ui/queues/{queue}/pause", pause, ["POST"]),
    ("/ui/queues/{queue}/resume", resume, ["POST"]),
    ("/ui/queues/{queue}/update", update, ["POST"]),
    ("/ui/queues/{queue}/purge", purge_confirm, ["GET"]),
    ("/ui/queues/{queue}/purge", purge, ["POST"]),
    ("/ui/events", events, ["GET"]),
]
