"""ListTasks: TaskFilter parsing, order_by, and keyset page tokens.

A page token carries the last row's sort key and id plus a fingerprint of the
project, filter and order it was made for; reusing it with another filter or order
is INVALID_ARGUMENT rather than a silently wrong page. Keyset positions stay valid
while tasks are added: every task present when paging starts is returned exactly
once, in order, and none twice.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace

from conveyor.server.domain import names, paging
from conveyor.server.domain.task_ids import lower_bound, upper_bound
from conveyor.server.domain.task_input import MAX_KIND, parse_task_name, timestamp
from conveyor.server.errors import InvalidArgument, Violations
from conveyor.server.states import State
from conveyor.server.store.task_rows import TaskRow
from conveyor.server.store.tasks import Order, TaskQuery
from conveyor.v1 import enums_pb2, task_pb2

__all__ = ["ORDERS", "PRIORITY_NAMES", "parse_filter", "parse_order", "query", "token_at"]

ORDERS: dict[str, Order] = {
    "create_time": "id",
    "create_time asc": "id",
    "create_time desc": "id_desc",
    "priority": "priority",
    "priority asc": "priority",
    "priority desc": "priority_desc",
}
PRIORITY_NAMES = {"critical": 1, "high": 3, "normal": 5, "low": 7}
MAX_VALUES = 1000
MAX_SEARCH = 200
ME = "me"  # in TaskFilter.creators: the calling key
_TOKEN_FIELDS = ("id", "fp")


def parse_order(order_by: str, field_path: str = "order_by") -> Order:
    normal = " ".join(order_by.split()).lower() or "create_time"
    order = ORDERS.get(normal)
    if order is None:
        raise InvalidArgument.of(
            field_path, "must be create_time, create_time desc, priority or priority desc"
        )
    return order


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _many(v: Violations, values: list[str], field_path: str) -> list[str]:
    if len(values) > MAX_VALUES:
        v.add(field_path, f"at most {MAX_VALUES} values")
    for value in values:
        if "\x00" in value:
            v.add(field_path, "must not contain NUL characters")
            break
    return values


def _creators(v: Violations, values: list[str], field_path: str, me: str) -> list[str]:
    """The creators to match, with `me` replaced by the calling key's name."""
    creators: list[str] = []
    for value in _many(v, values, field_path):
        if value == ME:
            if not me:
                v.add(field_path, "`me` needs a calling API key")
                continue
            value = me
        creators.append(value)
    return creators


def parse_filter(
    v: Violations,
    task_filter: task_pb2.TaskFilter,
    project: str,
    field_path: str = "filter",
    *,
    me: str = "",
) -> TaskQuery:
    """The conditions of a TaskFilter (limit and order left at their defaults).

    `me` is the calling key's name, which `creators: ["me"]` stands for.
    """
    states: list[str] = []
    for state in task_filter.states:
        if state == enums_pb2.TASK_STATE_UNSPECIFIED or state not in enums_pb2.TaskState.values():
            v.add(f"{field_path}.states", f"{state} is not a task state")
        else:
            states.append(State.from_proto(state).value)
    priorities: list[int] = []
    for text in task_filter.priorities:
        key = text.strip().lower()
        number = PRIORITY_NAMES.get(key)
        if number is None and key.isdigit() and 1 <= int(key) <= 9:
            number = int(key)
        if number is None:
            v.add(
                f"{field_path}.priorities",
                f"{text!r} is not 1..9, critical, high, normal or low",
            )
        else:
            priorities.append(number)
    workers: list[str] = []
    for worker in _many(v, list(task_filter.workers), f"{field_path}.workers"):
        if worker.startswith("projects/"):
            parts = worker.split("/")
            if len(parts) != 4 or parts[2] != "workers" or parts[1] != project:
                v.add(f"{field_path}.workers", f"{worker!r} is not a worker of projects/{project}")
                continue
            worker = parts[3]
        workers.append(worker)
    root_task = None
    if task_filter.root_task:
        try:
            parsed = parse_task_name(task_filter.root_task, f"{field_path}.root_task")
        except InvalidArgument as error:
            v.items.extend(error.violations)
        else:
            if parsed.project != project:
                v.add(f"{field_path}.root_task", f"must be a task of projects/{project}")
            root_task = uuid.UUID(parsed.id)
    labels = dict(task_filter.labels)
    for label, label_value in labels.items():
        if "\x00" in label or "\x00" in label_value:
            v.add(f"{field_path}.labels[{label}]", "must not contain NUL characters")
    search = None
    if task_filter.search:
        if len(task_filter.search) > MAX_SEARCH or "\x00" in task_filter.search:
            v.add(f"{field_path}.search", f"must be at most {MAX_SEARCH} characters, no NUL")
        else:
            search = f"%{_escape_like(task_filter.search)}%"
    if "\x00" in task_filter.correlation_id:
        v.add(f"{field_path}.correlation_id", "must not contain NUL characters")
    for kind in task_filter.kinds:
        if len(kind) > MAX_KIND:
            v.add(f"{field_path}.kinds", f"kinds are at most {MAX_KIND} characters")
            break
    after = before = None
    if task_filter.HasField("create_time_after"):
        after = timestamp(v, task_filter.create_time_after, f"{field_path}.create_time_after")
    if task_filter.HasField("create_time_before"):
        before = timestamp(v, task_filter.create_time_before, f"{field_path}.create_time_before")
    return TaskQuery(
        project=project,
        limit=paging.DEFAULT_PAGE_SIZE,
        states=states,
        priorities=priorities,
        kinds=_many(v, list(task_filter.kinds), f"{field_path}.kinds"),
        queues=_many(v, list(task_filter.queues), f"{field_path}.queues"),
        workers=workers,
        correlation_id=task_filter.correlation_id or None,
        creators=_creators(v, list(task_filter.creators), f"{field_path}.creators", me),
        root_task=root_task,
        labels=labels,
        search=search,
        create_time_after=after,
        id_floor=lower_bound(after) if after is not None else None,
        create_time_before=before,
        id_ceiling=upper_bound(before) if before is not None else None,
    )


def _fingerprint(query: TaskQuery, order: Order, task_filter: task_pb2.TaskFilter) -> str:
    digest = hashlib.sha256()
    digest.update(query.project.encode())
    digest.update(b"\0" + order.encode() + b"\0")
    digest.update(task_filter.SerializeToString(deterministic=True))
    # `me` differs per caller: another key's token does not continue this list.
    if query.creators:
        digest.update(b"\0" + "\0".join(query.creators).encode())
    return digest.hexdigest()[:16]


def query(
    parent: str,
    task_filter: task_pb2.TaskFilter,
    page_size: int,
    page_token: str,
    order_by: str,
    *,
    me: str = "",
) -> TaskQuery:
    """The TaskQuery of a ListTasks request (it fetches one row more than the page)."""
    project = names.parse(parent, "parent").project
    v = Violations()
    try:
        limit = paging.page_size(page_size)
    except InvalidArgument as error:
        v.items.extend(error.violations)
        limit = paging.DEFAULT_PAGE_SIZE
    try:
        order = parse_order(order_by)
    except InvalidArgument as error:
        v.items.extend(error.violations)
        order = "id"
    parsed = parse_filter(v, task_filter, project, me=me)
    v.raise_if_any()
    parsed = replace(parsed, limit=limit + 1, order=order)
    if not page_token:
        return parsed
    position = paging.decode_token(page_token, _TOKEN_FIELDS)
    if position["fp"] != _fingerprint(parsed, order, task_filter):
        raise InvalidArgument.of(
            "page_token", "was made for another filter or order_by; start again without it"
        )
    try:
        after_id = uuid.UUID(str(position["id"]))
        after_priority = int(position["p"]) if order.startswith("priority") else None
    except (KeyError, ValueError, TypeError):
        raise InvalidArgument.of("page_token", "is not a token this method returned") from None
    return replace(parsed, after_id=after_id, after_priority=after_priority)


def token_at(last: TaskRow, query: TaskQuery, task_filter: task_pb2.TaskFilter) -> str:
    """The token of the page that follows `last` (also for a page cut short by size)."""
    position: dict[str, object] = {
        "id": str(last.id),
        "fp": _fingerprint(query, query.order, task_filter),
    }
    if query.order.startswith("priority"):
        position["p"] = last.priority
    return paging.encode_token(position)
