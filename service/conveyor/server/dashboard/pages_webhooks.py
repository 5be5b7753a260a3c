"""The webhook block: the project's callback URL, its secret (rotated, shown once), and
the recent deliveries (the `webhook.*` events of the project's log)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import field_mask_pb2
from starlette.responses import Response

from conveyor.server.dashboard.formats import TERMINAL_STATES
from conveyor.server.dashboard.web import View, back
from conveyor.v1 import event_pb2, project_pb2, task_pb2, task_service_pb2

RECENT_DELIVERIES = 8
RECENT_TASKS = 50


@dataclass
class WebhookBlock:
    callback_url: str = ""
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    secret: str = ""
    """Filled only in the answer to a rotation: the secret is shown once."""


async def webhook_block(view: View, secret: str = "") -> WebhookBlock:
    project = await view.call(
        view.api.projects.GetProject, project_pb2.GetProjectRequest(name=view.parent)
    )
    return WebhookBlock(project.callback_url, await _deliveries(view), secret)


async def _deliveries(view: View) -> list[dict[str, Any]]:
    """The deliveries of the most recently created finished tasks, one row per delivery
    (its latest attempt, from the `webhook.*` events), newest first."""
    finished = await view.call(
        view.api.tasks.ListTasks,
        task_service_pb2.ListTasksRequest(
            parent=view.parent,
            filter=task_pb2.TaskFilter(states=TERMINAL_STATES),
            page_size=RECENT_TASKS,
            order_by="create_time desc",
        ),
    )
    if not finished.tasks:
        return []
    page = await view.call(
        view.api.events.ListEvents,
        event_pb2.ListEventsRequest(
            parent=view.parent,
            filter=event_pb2.EventFilter(
                types=["webhook.*"], tasks=[t.name for t in finished.tasks]
            ),
            page_size=1000,
        ),
    )
    latest: dict[str, dict[str, Any]] = {}
    for event in page.events:
        data = event.data.fields
        webhook_id = data["webhook_id"].string_value if "webhook_id" in data else str(event.id)
        latest.pop(webhook_id, None)  # re-inserted last: the newest attempt wins
        latest[webhook_id] = {
            "status": event.type.removeprefix("webhook.").upper(),
            "event": data["event"].string_value if "event" in data else "",
            "url": data["url"].string_value if "url" in data else "",
            "attempts": int(data["attempt"].number_value) if "attempt" in data else 0,
            "status_code": int(data["status_code"].number_value) if "status_code" in data else 0,
            "error": data["error"].string_value if "error" in data else "",
            "task": event.subject,
            "time": event.time,
        }
    return sorted(latest.values(), key=lambda d: d["time"].ToNanoseconds(), reverse=True)[
        :RECENT_DELIVERIES
    ]


async def page(view: View) -> Response:
    return view.render("webhooks.html", webhooks=await webhook_block(view))


async def set_callback(view: View) -> Response:
    url = view.form.get("callback_url", "").strip()
    await view.call(
        view.api.projects.UpdateProject,
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name=view.parent, callback_url=url),
            update_mask=field_mask_pb2.FieldMask(paths=["callback_url"]),
        ),
    )
    return back(view, "/ui/webhooks", "Callback URL saved.")


async def rotate(view: View) -> Response:
    rotated = await view.call(
        view.api.projects.RotateWebhookSecret,
        project_pb2.RotateWebhookSecretRequest(name=f"{view.parent}/webhookSecret"),
    )
    # Rendered here rather than redirected: the new secret is shown this once only.
    return view.render(
        "webhooks.html",
        webhooks=await webhook_block(view, rotated.secret),
        notice="Secret rotated. Copy it now: it is not shown again.",
    )


ROUTES = [
    ("/ui/webhooks", page, ["GET"]),
    ("/ui/webhooks/callback", set_callback, ["POST"]),
    ("/ui/webhooks/rotate", rotate, ["POST"]),
]
