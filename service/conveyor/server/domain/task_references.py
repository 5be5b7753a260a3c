"""Names of other tasks a new task refers to: its parent, what it depends on.

Both must name a task of the caller's project; a bad name adds a violation at its
field path instead of raising, so that one pass reports every bad field.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from conveyor.server.domain import names
from conveyor.server.errors import InvalidArgument, Violations

MAX_DEPENDS_ON = 100

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def parse_task_name(value: str, field_path: str) -> names.Name:
    """`projects/{project}/tasks/{uuid}`; InvalidArgument naming field_path otherwise."""
    return names.parse(value, field_path, "tasks", id_re=_UUID_RE)


def depends_on_ids(
    v: Violations, values: Sequence[str], field_path: str, project: str
) -> tuple[uuid.UUID, ...]:
    """The ids of the tasks named, or () after adding a violation per bad name."""
    if len(values) > MAX_DEPENDS_ON:
        v.add(field_path, f"must name at most {MAX_DEPENDS_ON} tasks, not {len(values)}")
        return ()
    ids: list[uuid.UUID] = []
    seen: dict[uuid.UUID, int] = {}
    for i, value in enumerate(values):
        at = f"{field_path}[{i}]"
        count = len(v.items)
        task_id = task_in_project(v, value, at, project)
        if task_id is None:
            if len(v.items) == count:
                v.add(at, "is required")
            continue
        if task_id in seen:
            v.add(at, f"repeats {field_path}[{seen[task_id]}]")
            continue
        seen[task_id] = i
        ids.append(task_id)
    return tuple(ids)


def task_in_project(v: Violations, value: str, field_path: str, project: str) -> uuid.UUID | None:
    """The id of a task named in `project`, or None after adding a violation."""
    try:
        parent = parse_task_name(value, field_path)
    except InvalidArgument as error:
        v.items.extend(error.violations)
        return None
    if parent.project != project:
        v.add(field_path, f"must be a task of projects/{project}")
        return None
    return uuid.UUID(parent.id)
