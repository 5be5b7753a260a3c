"""google.rpc.Status -> RFC 9457 application/problem+json.

    {
      "type": "https://conveyor.dev/problems/queue-paused",
      "title": "Queue paused",
      "status": 412,
      "detail": "queue projects/acme/queues/default is paused",
      "code": "queue_paused",
      "instance": "/v1/projects/acme/tasks:lease",
      "request_id": "3f2c...",
      "errors": [{"field": "task.kind", "description": "is required"}],
      "retry_after_seconds": 1.5,
      "allowed_actions": [{"rel": "resume", "method": "POST",
                           "href": "/v1/projects/acme/queues/default:resume",
                           "operation_id": "QueueService_ResumeQueue", "hint": "..."}],
      "metadata": {...}, "preconditions": [...]
    }

`type`, `title` and `code` come from the ErrorInfo reason (so a client switches on
`code`), `status` from the gRPC code, `errors` from BadRequest, `preconditions` from
PreconditionFailure, `retry_after_seconds` (and the Retry-After header) from RetryInfo.
`errors` and `allowed_actions` are always present, possibly empty; the actions come
from actions.py (shared with the seed APIs in compat/), their hrefs from the v1 routes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from conveyor.server.errors import FieldViolation
from conveyor.server.gateway import actions
from conveyor.server.gateway.routes import Binding, Router

__all__ = [
    "HTTP_STATUS",
    "MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "Problem",
    "from_rpc_error",
    "from_status",
    "problem",
    "status_of",
]

PROBLEM_TYPE_BASE = "https://conveyor.dev/problems/"
MEDIA_TYPE = "application/problem+json"

# google.rpc.Code -> HTTP status, as google/rpc/code.proto documents it, except
# FAILED_PRECONDITION: 412 rather than 400, so a client can tell "the resource is not
# in a state that allows this" (re-read it) from "your request is malformed" (fix it).
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 412,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class Problem:
    """A problem document with the headers that go with it."""

    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def status(self) -> int:
        return int(self.body["status"])


def _title(reason: str) -> str:
    return reason.replace("_", " ").capitalize()


def problem(
    http_status: int,
    reason: str,
    detail: str,
    instance: str,
    *,
    violations: Sequence[FieldViolation] = (),
    headers: Mapping[str, str] | None = None,
    request_id: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Problem:
    """A problem the gateway raises itself (404, 405, a bad body...)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + reason.lower().replace("_", "-"),
        "title": _title(reason),
        "status": http_status,
        "detail": detail,
        "code": reason.lower(),
        "instance": instance,
        "errors": [{"field": v.field, "description": v.description} for v in violations],
        "allowed_actions": [],
    }
    if request_id:
        body["request_id"] = request_id
    body.update(extra or {})
    return Problem(body, dict(headers or {}))


def from_status(
    status: status_pb2.Status,
    instance: str,
    *,
    router: Router | None = None,
    request: Message | None = None,
    request_id: str = "",
    binding: Binding | None = None,
) -> Problem:
    """The problem for a google.rpc.Status answered by the service; with a `router`,
    its allowed_actions link v1 routes (`binding`: the route that was called)."""
    details = actions.unpack(status.details)
    info = details.get("ErrorInfo")
    code_name = code_pb2.Code.Name(status.code) if status.code in HTTP_STATUS else "UNKNOWN"
    reason = (
        info.reason if isinstance(info, error_details_pb2.ErrorInfo) and info.reason else code_name
    )
    http_status = HTTP_STATUS.get(status.code, 500)
    violations: list[FieldViolation] = []
    bad_request = details.get("BadRequest")
    if isinstance(bad_request, error_details_pb2.BadRequest):
        violations = [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    retry = details.get("RetryInfo")
    if isinstance(retry, error_details_pb2.RetryInfo):
        seconds = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        extra["retry_after_seconds"] = seconds
        headers["Retry-After"] = str(max(0, math.ceil(seconds)))
    failure = details.get("PreconditionFailure")
    if isinstance(failure, error_details_pb2.PreconditionFailure):
        extra["preconditions"] = [
            {"type": v.type, "subject": v.subject, "description": v.description}
            for v in failure.violations
        ]
    metadata = dict(info.metadata) if isinstance(info, error_details_pb2.ErrorInfo) else {}
    if metadata:
        extra["metadata"] = metadata
    if http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
    built = problem(
        http_status,
        reason,
        status.message or code_name.replace("_", " ").lower(),
        instance,
        violations=violations,
        headers=headers,
        request_id=request_id,
        extra=extra,
    )
    if router is not None:
        steps = actions.next_steps(status, details)
        built.body["allowed_actions"] = allowed_actions(
            router, steps, metadata, request, instance, binding
        )
    return built


def from_rpc_error(
    error: grpc.aio.AioRpcError,
    instance: str,
    *,
    router: Router | None = None,
    request: Message | None = None,
    request_id: str = "",
    binding: Binding | None = None,
) -> Problem:
    """The problem for a failed call: the rich status from its trailer, else code + text."""
    status = status_of(error)
    return from_status(
        status, instance, router=router, request=request, request_id=request_id, binding=binding
    )


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The rich google.rpc.Status of a failed call (from its trailer), else code + text."""
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                break
    return status_pb2.Status(code=error.code().value[0], message=error.details() or "")


def allowed_actions(
    router: Router,
    steps: Sequence[actions.Step],
    metadata: Mapping[str, str],
    request: Message | None,
    instance: str = "",
    binding: Binding | None = None,
) -> list[dict[str, str]]:
    """The steps as v1 `allowed_actions` items: a step that names a method gets that
    route's href (filled from the step, the error or the request; dropped when no href
    can be filled); a step that repeats the call links `instance`; others carry only
    rel and hint."""
    out: list[dict[str, str]] = []
    strings = request_strings(request)
    for step in steps:
        item = {"rel": step.rel}
        if step.repeat:
            if binding is not None:
                item |= {"method": binding.http_method, "operation_id": binding.operation_id}
            if instance:
                item["href"] = instance
        elif step.rpc:
            target = router.by_rpc(step.rpc)
            if target is None or len(target.template.variables) != 1:
                continue
            name = step_resource(step, metadata, strings)
            if name is None:
                continue
            href = target.template.expand({target.template.variables[0].field_path: name})
            if href is None:
                continue
            item |= {
                "method": target.http_method,
                "href": href,
                "operation_id": target.operation_id,
            }
        item["hint"] = step.hint
        out.append(item)
    return out


def step_resource(
    step: actions.Step, metadata: Mapping[str, str], strings: Mapping[str, str]
) -> str | None:
    """The resource name that fills a step's route: the step's own, or the one of its
    `resource` kind found in the error or the request's string fields."""
    if step.name:
        return step.name
    return _RESOURCES[step.resource](metadata, strings) if step.resource else None


def request_strings(request: Message | None) -> dict[str, str]:
    if request is None:
        return {}
    return {
        field.name: value
        for field, value in request.ListFields()
        if isinstance(value, str) and value
    }


def _project(*sources: Mapping[str, str]) -> str | None:
    for source in sources:
        for value in source.values():
            parts = value.split("/")
            if len(parts) >= 2 and parts[0] == "projects" and parts[1]:
                return f"projects/{parts[1]}"
    return None


def _named(
    collection: str, key: str
) -> Callable[[Mapping[str, str], Mapping[str, str]], str | None]:
    """Finds `projects/*/<collection>/*`: a full name in the error or the request, or a
    short id under `key` joined to the request's project."""

    def find(metadata: Mapping[str, str], request: Mapping[str, str]) -> str | None:
        for source in (metadata, request):
            for value in source.values():
                parts = value.split("/")
                if len(parts) == 4 and parts[0] == "projects" and parts[2] == collection:
                    return value
        short = metadata.get(key) or request.get(key)
        project = _project(metadata, request)
        if short and "/" not in short and project:
            return f"{project}/{collection}/{short}"
        return None

    return find


_RESOURCES: dict[str, Callable[[Mapping[str, str], Mapping[str, str]], str | None]] = {
    "queue": _named("queues", "queue"),
    "task": _named("tasks", "task"),
    "schedule": _named("schedules", "schedule"),
    "project": lambda metadata, request: _project(metadata, request),
}
