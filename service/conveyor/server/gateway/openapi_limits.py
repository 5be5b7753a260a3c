"""The validation limits the OpenAPI document states: id patterns, ranges and lengths.

The numbers and grammars are the ones the domain checks (DESIGN.md section 7), taken
from the modules that check them, so the document cannot drift from the server:
resource ids and names by their `google.api.resource` patterns, `page_size` and the
other ranges by field. Where 0 means "the default" (page_size, priority, count...), the
range starts at 0 and says so, since a proto3 field cannot tell 0 from absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, cast

from google.api import field_behavior_pb2, resource_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from conveyor.server.domain import (
    names,
    paging,
    retry_policy,
    schedule_spec,
    schedules,
)
from conveyor.server.gateway.descriptors import behaviors

__all__ = ["field_limits", "path_pattern", "resource_patterns"]

Schema = dict[str, Any]

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The id grammar of each resource-pattern variable (and OpenAPI path parameter).
_IDS: dict[str, str] = {
    "project": names.ID_RE.pattern.strip("^$"),
    "queue": names.QUEUE_RE.pattern.strip("^$"),
    "task": _UUID,
    "schedule": names.ID_RE.pattern.strip("^$"),
    "api_key": names.ID_RE.pattern.strip("^$"),
    "apiKey": names.ID_RE.pattern.strip("^$"),
    "worker": names.ID_RE.pattern.strip("^$"),
    "command": r"[1-9][0-9]{0,17}",
}
_RESOURCE: Any = resource_pb2.resource
_REFERENCE: Any = resource_pb2.resource_reference


def path_pattern(param: str) -> str:
    """The pattern of one OpenAPI path parameter (named after its collection)."""
    return f"^{_IDS.get(param, '[^/:]+')}$"


def _name_regex(pattern: str) -> str:
    return re.sub(r"\{([a-z_]+)\}", lambda m: f"(?:{_IDS.get(m.group(1), '[^/]+')})", pattern)


def resource_patterns(files: Iterable[FileDescriptor]) -> dict[str, str]:
    """{resource type: anchored regex of its names}, from the messages' resource options."""
    found: dict[str, str] = {}

    def visit(message: Descriptor) -> None:
        options = message.GetOptions()
        if options.HasExtension(_RESOURCE):
            resource = cast(resource_pb2.ResourceDescriptor, options.Extensions[_RESOURCE])
            found[resource.type] = "^(?:" + "|".join(map(_name_regex, resource.pattern)) + ")$"
        for nested in message.nested_types:
            visit(nested)

    for file in files:
        for message in file.message_types_by_name.values():
            visit(message)
    return found


_PROJECT_NAME = f"^projects/{_IDS['project']}$"
_ID = _IDS["project"]
_TEXT: Schema = {"pattern": r"^[^\x00-\x1f\x7f]{1,200}$"}
# rates.py: a count, optionally per second, minute or hour (at most rates.MAX_COUNT).
_RATE = r"\s*[0-9]{1,6}\s*(?:/\s*[smhSMH])?\s*"
_MAX_DURATION_S = 10**9


def _range(low: int, high: int, note: str = "") -> Schema:
    schema: Schema = {"minimum": low, "maximum": high}
    if note:
        schema["description"] = note
    return schema


# Limits by field name (any message) and by full field name (one field).
_BY_NAME: dict[str, Schema] = {
    "page_size": _range(
        0, paging.MAX_PAGE_SIZE, f"1 to {paging.MAX_PAGE_SIZE}; 0 or absent: the default"
    ),
}
_BY_FIELD: dict[str, Schema] = {
    "conveyor.v1.Task.priority": _range(0, 9, "1 (highest) to 9; 0 or absent: 5"),
    "conveyor.v1.TaskTemplate.priority": _range(0, 9, "1 (highest) to 9; 0 or absent: 5"),
    "conveyor.v1.RetryPolicy.max_attempts": _range(
        0, retry_policy.MAX_ATTEMPTS, "0 or absent: the queue's default"
    ),
    "conveyor.v1.Queue.max_concurrency": _range(0, 100_000, "0 is unlimited"),
    "conveyor.v1.PreviewScheduleRequest.count": _range(
        0, schedules.MAX_PREVIEW, f"1 to {schedules.MAX_PREVIEW}; 0 or absent: 10"
    ),
    "conveyor.v1.ScheduleSpec.expression": {
        "minLength": 1,
        "maxLength": schedule_spec.MAX_EXPRESSION,
    },
    "conveyor.v1.Task.queue": {"pattern": f"^(?:{_IDS['queue']})?$"},
    "conveyor.v1.TaskTemplate.queue": {"pattern": f"^(?:{names.ID_RE.pattern.strip('^$')})?$"},
    "conveyor.v1.Task.kind": _TEXT,
    "conveyor.v1.TaskTemplate.kind": _TEXT,
    "conveyor.v1.Event.type": _TEXT,
    "conveyor.v1.EventFilter.types": _TEXT,
    "conveyor.v1.SetRateLimitRequest.kind": _TEXT,
    "conveyor.v1.TaskFilter.priorities": {"pattern": "^(?:[1-9]|critical|high|normal|low)$"},
    "conveyor.v1.CreateProjectRequest.project_id": {"pattern": f"^{_ID}$"},
    "conveyor.v1.CreateScheduleRequest.schedule_id": {"pattern": f"^(?:{_ID})?$"},
    "conveyor.v1.LeaseTasksRequest.worker": {"pattern": f"^{_ID}$"},
    "conveyor.v1.LeaseTasksRequest.queues": {"pattern": f"^{_IDS['queue']}$"},
    "conveyor.v1.LeaseTasksRequest.max_tasks": _range(0, 100, "1 to 100; 0 or absent: 1"),
    "conveyor.v1.RestartWorkerRequest.worker": {"pattern": f"^{_ID}$"},
    "conveyor.v1.ResizePoolRequest.worker": {"pattern": f"^{_ID}$"},
    "conveyor.v1.AddConsumerRequest.worker": {"pattern": f"^{_ID}$"},
    "conveyor.v1.CancelConsumerRequest.worker": {"pattern": f"^{_ID}$"},
    "conveyor.v1.SetRateLimitRequest.worker": {"pattern": f"^(?:{_ID})?$"},
    "conveyor.v1.PurgeQueueRequest.queue": {"pattern": f"^{_IDS['queue']}$"},
    "conveyor.v1.AddConsumerRequest.queue": {"pattern": f"^{_IDS['queue']}$"},
    "conveyor.v1.CancelConsumerRequest.queue": {"pattern": f"^{_IDS['queue']}$"},
    "conveyor.v1.SetRateLimitRequest.rate_limit": {"pattern": f"^{_RATE}$"},
    "conveyor.v1.Queue.rate_limit": {"pattern": f"^(?:{_RATE})?$"},
    "conveyor.v1.BatchRetryTasksRequest.max": {**_range(1, 10_000), "required": True},
    "conveyor.v1.ResizePoolRequest.delta": {
        **_range(-100, 100, "-100 to 100, not 0"),
        "not": {"const": 0},
        "required": True,
    },
    "conveyor.v1.CreateTaskRequest.parent": {
        "maxLength": 0,
        "description": "Empty: each item's parent is the batch's (repeating it is accepted)",
    },
}


def field_limits(field: FieldDescriptor, resources: dict[str, str]) -> Schema:
    """The limits the document states for one field (empty when it states none)."""
    limits = dict(_BY_NAME.get(field.name, {}))
    limits |= _BY_FIELD.get(field.full_name, {})
    if field.type == FieldDescriptor.TYPE_STRING and not {"pattern", "maxLength"} & set(limits):
        options = field.GetOptions()
        if options.HasExtension(_REFERENCE):
            reference = cast(resource_pb2.ResourceReference, options.Extensions[_REFERENCE])
            pattern = resources.get(reference.type) or (
                _PROJECT_NAME if reference.child_type else ""
            )
            if pattern and field_behavior_pb2.REQUIRED not in behaviors(field):
                pattern = f"^(?:{pattern.strip('^$')})?$"  # empty: not given
            if pattern:
                limits["pattern"] = pattern
    return limits
