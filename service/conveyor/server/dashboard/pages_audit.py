"""Audit: the command log with filters and keyset paging, and "Verify chain"."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import Response

from conveyor.server.dashboard.pages_task_list import time_range
from conveyor.server.dashboard.web import View
from conveyor.v1 import command_pb2, enums_pb2

PAGE_SIZE = 50
_STATUS_NAMES: list[str] = list(enums_pb2.CommandStatus.keys())
_VERB_NAMES: list[str] = list(enums_pb2.CommandVerb.keys())
STATUSES = [n.removeprefix("COMMAND_STATUS_") for n in _STATUS_NAMES[1:]]
VERBS = [n.removeprefix("COMMAND_VERB_") for n in _VERB_NAMES[1:]]


async def audit(view: View) -> Response:
    query = view.request.query_params
    statuses = [s for s in query.getlist("status") if s in STATUSES]
    verbs = [v for v in query.getlist("verb") if v in VERBS]
    command_filter = command_pb2.CommandFilter(
        statuses=[enums_pb2.CommandStatus.Value(f"COMMAND_STATUS_{s}") for s in statuses],
        verbs=[enums_pb2.CommandVerb.Value(f"COMMAND_VERB_{v}") for v in verbs],
        issued_by=query.get("issued_by", ""),
    )
    time_range(query, command_filter)
    listed = await view.call(
        view.api.commands.ListCommands,
        command_pb2.ListCommandsRequest(
            parent=view.parent,
            filter=command_filter,
            page_size=PAGE_SIZE,
            page_token=query.get("page_token", ""),
        ),
    )
    kept = [(k, v) for k, v in query.multi_items() if k != "page_token" and v]
    verified = None
    if query.get("verify"):
        verified = await view.call(
            view.api.commands.VerifyAuditLog,
            command_pb2.VerifyAuditLogRequest(parent=view.parent),
        )
    return view.render(
        "audit.html",
        commands=list(listed.commands),
        statuses=STATUSES,
        verbs=VERBS,
        chosen_statuses=set(statuses),
        chosen_verbs=set(verbs),
        query=query,
        verified=verified,
        next_link="?" + urlencode([*kept, ("page_token", listed.next_page_token)])
        if listed.next_page_token
        else "",
    )


ROUTES = [("/ui/audit", audit, ["GET"])]
