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
    redaction,
    request_limits,
    retry_policy,
    schedule_spec,
    schedules,
    task_list,
    task_log_bounds,
    task_logs,
    validate,
)
from conveyor.server.gateway.descriptors import behaviors
from conveyor.v1 import task_pb2

__all__ = [
    "MESSAGE_RULES",
    "NO_NUL",
    "REQUEST_DURATION",
    "VALUE_RULES",
    "field_limits",
    "label_map",
    "path_pattern",
    "resource_patterns",
]

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

    seen: set[str] = set()

    def visit_file(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for message in file.message_types_by_name.values():
            visit(message)
        for dependency in file.dependencies:
            visit_file(dependency)

    for file in files:
        visit_file(file)
    return found


_PROJECT_NAME = f"^projects/{_IDS['project']}$"
_ID = _IDS["project"]
# validate.url: empty, or an absolute http(s) URL with a host.
_URL = r"^(?:https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][^\s\x00]*)?)?$"
_UNEXPORTED = frozenset({"attempts", "blocked_reason"})  # export_columns
# Request text: PostgreSQL stores no NUL character (validate.NUL_RULE).
NO_NUL = "^[^\\x00]*$"
# Durations a request may give: at least 1s and under 10000s, below every limit (leases
# and command timeouts 24h, backoffs 24h and 7d, snoozes and grace periods 7d...).
REQUEST_DURATION = r"^[1-9][0-9]{0,3}(?:\.[0-9]{1,9})?s$"
_TEXT: Schema = {"pattern": r"^[^\x00-\x1f\x7f]{1,200}$"}
# rates.py: a count, optionally per second, minute or hour (at most rates.MAX_COUNT).
_RATE = r"\s*[0-9]{1,6}\s*(?:/\s*[smhSMH])?\s*"
_MAX_DURATION_S = 10**9
# redaction.check_paths: a JSON Pointer ("/card/number", "~" escaped as ~0 or ~1) or a
# bare key without "/", 1 to 256 characters, no NUL, and no white space at either end as
# Python's str.strip() sees it (which \s does not spell: \x1c-\x1f, \x85; not \ufeff).
_WS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_REDACT_PATH: Schema = {
    "pattern": (
        rf"^(?:/(?:(?:[^~\x00]|~[01])*(?:[^~\x00{_WS}]|~[01]))?"
        rf"|[^/\x00{_WS}](?:[^/\x00]*[^/\x00{_WS}])?)$"
    ),
    "minLength": 1,
    "maxLength": redaction.MAX_PATH_CHARS,
}


def _range(low: int, high: int, note: str = "") -> Schema:
    schema: Schema = {"minimum": low, "maximum": high}
    if note:
        schema["description"] = note
    return schema


# Limits by field name (any message) and by full field name (one field).
_BY_NAME: dict[str, Schema] = {
    "after": {"pattern": "^[0-9]{1,18}$", "description": "An event id (a cursor)"},
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
    "conveyor.v1.Project.redact_paths": _REDACT_PATH,
    "conveyor.v1.Queue.redact_paths": _REDACT_PATH,
    "conveyor.v1.RequestLimit.requests_per_second": _range(
        0, int(request_limits.MAX_RATE), "0 or absent: unlimited"
    ),
    "conveyor.v1.RequestLimit.burst": _range(
        0, request_limits.MAX_BURST, "0 or absent: one second's worth"
    ),
    "conveyor.v1.Queue.max_log_lines": _range(
        0, task_log_bounds.MAX_MAX_LOG_LINES, "0 or absent: the default (10,000)"
    ),
    "conveyor.v1.Queue.max_log_bytes": {
        "anyOf": [
            {"const": 0},
            _range(task_log_bounds.MIN_MAX_LOG_BYTES, task_log_bounds.MAX_MAX_LOG_BYTES),
        ],
        "description": "0 or absent: the default (1 MiB)",
    },
    "conveyor.v1.AppendTaskLogsRequest.lease_id": {"pattern": f"^{_UUID}$"},
    "conveyor.v1.ListTaskLogsRequest.attempt": _range(0, 2**31 - 1, "0 or absent: every attempt"),
    "conveyor.v1.WatchTaskLogsRequest.attempt": _range(0, 2**31 - 1, "0 or absent: the current"),
    "conveyor.v1.WatchTaskLogsRequest.after_seq": {"pattern": "^[0-9]{1,18}$"},
    # task_logs.MAX_LINE_BYTES: 64 KiB of UTF-8 holds at least 16 Ki characters.
    "conveyor.v1.TaskLogLine.message": {
        "maxLength": task_logs.MAX_LINE_BYTES // 4,
        "pattern": NO_NUL,
        "description": "With its fields at most 64 KiB of UTF-8",
    },
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
    "conveyor.v1.Event.type": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$"},
    "conveyor.v1.TaskFilter.root_task": {"pattern": f"^(?:projects/{_ID}/tasks/{_UUID})?$"},
    "conveyor.v1.ExtendLeaseRequest.lease_id": {"pattern": f"^{_UUID}$"},
    "conveyor.v1.CompleteTaskRequest.lease_id": {"pattern": f"^{_UUID}$"},
    "conveyor.v1.FailTaskRequest.lease_id": {"pattern": f"^{_UUID}$"},
    "conveyor.v1.PreviewScheduleRequest.schedule": {"required": True},
    "conveyor.v1.Project.callback_url": {"pattern": _URL},
    "conveyor.v1.Task.callback_url": {"pattern": _URL},
    "conveyor.v1.TaskTemplate.callback_url": {"pattern": _URL},
    "conveyor.v1.LeaseTasksRequest.wait_timeout": {
        "pattern": r"^[0-5]?[0-9](?:\.[0-9]{1,9})?s$",
        "description": "0 to 60s",
    },
    "conveyor.v1.ListTasksRequest.order_by": {"enum": ["", *task_list.ORDERS]},
    "conveyor.v1.ListTaskLogsRequest.order_by": {"enum": list(task_logs.ORDERS)},
    "conveyor.v1.Task.concurrency_limit": _range(0, 10_000, "1 to 10000; 0 or absent: 1"),
    "conveyor.v1.ExportTasksRequest.fields": {
        "enum": [f.name for f in task_pb2.Task.DESCRIPTOR.fields if f.name not in _UNEXPORTED],
    },
    "conveyor.v1.Event.subject": {"pattern": r"^[^\x00-\x1f\x7f]{0,1000}$"},
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
            optional = field_behavior_pb2.REQUIRED not in behaviors(field)
            if pattern and optional and not field.is_repeated:
                pattern = f"^(?:{pattern.strip('^$')})?$"  # empty: not given
            if pattern:
                limits["pattern"] = pattern
    return limits


def label_map(value: Schema) -> Schema:
    """Limits of a labels map (validate.labels)."""
    return {
        "type": "object",
        "maxProperties": validate.MAX_LABELS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": validate.MAX_LABEL_KEY,
            "pattern": NO_NUL,
        },
        "additionalProperties": {**value, "maxLength": validate.MAX_LABEL_VALUE},
    }


# Rules across fields of a request message, in JSON Schema; those of VALUE_RULES hold
# of a value wherever it is sent, in an Update's patch too.
VALUE_RULES = frozenset({"conveyor.v1.RequestLimit"})
MESSAGE_RULES: dict[str, Schema] = {
    "conveyor.v1.Task": {
        "allOf": [
            {
                "if": {"required": ["approval_timeout"]},
                "then": {
                    "properties": {"requires_approval": {"const": True}},
                    "required": ["requires_approval"],
                },
            },
            {
                "if": {"required": ["approval_timeout_action"]},
                "then": {"required": ["approval_timeout"]},
            },
        ]
    },
    "conveyor.v1.BatchDeleteTasksRequest": {
        "oneOf": [
            {"required": ["names"], "properties": {"names": {"minItems": 1}}},
            {"required": ["filter"]},
        ],
    },
    "conveyor.v1.AppendTaskLogsRequest": {
        "allOf": [{"properties": {"lines": {"maxItems": task_logs.MAX_LINES}}}],
    },
    # request_limits.check: a burst needs a rate.
    "conveyor.v1.RequestLimit": {
        "if": {"required": ["burst"], "properties": {"burst": {"not": {"const": 0}}}},
        "then": {
            "required": ["requests_per_second"],
            "properties": {"requests_per_second": {"exclusiveMinimum": 0}},
        },
    },
    "conveyor.v1.PurgeQueueRequest": {
        "anyOf": [
            {"required": ["confirm_token"], "properties": {"confirm_token": {"minLength": 1}}},
            {"required": ["force"], "properties": {"force": {"const": True}}},
        ]
    },
}
