"""Tasks: the whole ListTasks filter with keyset paging, and export of the filtered list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

from google.protobuf import timestamp_pb2
from starlette.datastructures import QueryParams
from starlette.responses import Response, StreamingResponse

from conveyor.server.dashboard.web import View
from conveyor.v1 import command_pb2, enums_pb2, task_pb2, task_service_pb2

PAGE_SIZE = 50
_FORMATS = {
    "csv": (enums_pb2.EXPORT_FORMAT_CSV, "csv"),
    "xlsx": (enums_pb2.EXPORT_FORMAT_XLSX, "xlsx"),
    "ndjson": (enums_pb2.EXPORT_FORMAT_NDJSON, "ndjson"),
}
_STATE_NAMES: list[str] = list(enums_pb2.TaskState.keys())
STATES = [n.removeprefix("TASK_STATE_") for n in _STATE_NAMES if n != "TASK_STATE_UNSPECIFIED"]
# Filter fields of the query string, kept across pages and into the export link.
_FIELDS = (
    "state",
    "priority",
    "kind",
    "queue",
    "worker",
    "correlation_id",
    "label",
    "search",
    "after",
    "before",
)


def _split(values: list[str]) -> list[str]:
    """Values from repeated fields and comma lists alike."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def parse_time(text: str) -> timestamp_pb2.Timestamp | None:
    """A datetime-local value (taken as UTC) or RFC 3339; None when empty or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


class BadFilter(ValueError):
    pass


def task_filter(view: View) -> task_pb2.TaskFilter:
    """The TaskFilter of the query string. Values are passed as typed: the server
    validates them and answers INVALID_ARGUMENT naming the field, as for any client.
    Raises BadFilter for a state name that no enum value has."""
    query = view.request.query_params
    states = []
    for state in _split(query.getlist("state")):
        full = f"TASK_STATE_{state.upper()}"
        if full not in _STATE_NAMES:
            raise BadFilter(f"state {state!r} is not one of {', '.join(STATES)}")
        states.append(enums_pb2.TaskState.Value(full))
    labels = {}
    for pair in _split(query.getlist("label")):
        key, _, value = pair.partition("=")
        labels[key.strip()] = value.strip()
    result = task_pb2.TaskFilter(
        states=states,
        priorities=_split(query.getlist("priority")),
        kinds=_split(query.getlist("kind")),
        queues=_split(query.getlist("queue")),
        workers=_split(query.getlist("worker")),
        correlation_id=query.get("correlation_id", ""),
        labels=labels,
        search=query.get("search", ""),
    )
    time_range(query, result)
    return result


def time_range(query: QueryParams, target: task_pb2.TaskFilter | command_pb2.CommandFilter) -> None:
    """The `after` and `before` fields of a filter form into create_time_after/before."""
    after, before = parse_time(query.get("after", "")), parse_time(query.get("before", ""))
    if after is not None:
        target.create_time_after.CopyFrom(after)
    if before is not None:
        target.create_time_before.CopyFrom(before)


def _kept(view: View) -> list[tuple[str, str]]:
    query = view.request.query_params
    return [(k, v) for k in _FIELDS for v in query.getlist(k) if v]


async def task_list(view: View) -> Response:
    query = view.request.query_params
    try:
        chosen = task_filter(view)
    except BadFilter as error:
        return view.render("error.html", status=400, message=str(error))
    listed = await view.call(
        view.api.tasks.ListTasks,
        task_service_pb2.ListTasksRequest(
            parent=view.parent,
            filter=chosen,
            page_size=PAGE_SIZE,
            page_token=query.get("page_token", ""),
            order_by=query.get("order_by", "create_time desc"),
        ),
    )
    kept = _kept(view)
    next_link = ""
    if listed.next_page_token:
        next_link = "?" + urlencode([*kept, ("page_token", listed.next_page_token)])
    return view.render(
        "tasks.html",
        tasks=list(listed.tasks),
        states=STATES,
        chosen_states={s.upper() for s in _split(query.getlist("state"))},
        query=query,
        next_link=next_link,
        first_link="?" + urlencode(kept),
        export_query=urlencode(kept),
        paged=bool(query.get("page_token")),
    )


async def export(view: View) -> Response:
    """Streams ExportTasks: the server writes the file, this only relays its chunks."""
    chosen = view.request.query_params.get("format", "csv")
    if chosen not in _FORMATS:
        return view.render("error.html", status=400, message="format must be csv, xlsx or ndjson")
    export_format, suffix = _FORMATS[chosen]
    try:
        chosen_filter = task_filter(view)
    except BadFilter as error:
        return view.render("error.html", status=400, message=str(error))
    call = view.api.stream(
        view.api.tasks.ExportTasks,
        task_service_pb2.ExportTasksRequest(
            parent=view.parent, filter=chosen_filter, format=export_format
        ),
    )
    reader = call.__aiter__()
    # The first chunk decides the answer: an error becomes an error page, not a file.
    first = await anext(reader, None)

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first.data
            async for chunk in reader:
                yield chunk.data
        finally:
            call.cancel()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        body(),
        media_type=(first.content_type if first is not None else "") or "application/octet-stream",
        headers={
            "content-disposition": f'attachment; filename="tasks-{view.project}-{stamp}.{suffix}"'
        },
    )


ROUTES = [
    ("/ui/tasks", task_list, ["GET"]),
    ("/ui/tasks/export", export, ["GET"]),
]
