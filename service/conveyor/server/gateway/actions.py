"""Next steps for an error: the `allowed_actions` of problem+json, from the status details.

One place reads a google.rpc.Status and says what the caller may do next; the v1
gateway (problems.py) and the seed APIs (compat/) render the same steps, each with its
own hrefs and field names:

- BadRequest field violations: one `fix-and-retry` step per bad field, with a hint
  that says how ("Shorten 'kind' to <= 200 chars.").
- ErrorInfo reason: the steps of ACTIONS (a paused queue: `resume`; a stale purge
  token: `refresh`; a cancelled schedule: `create` another ...); ALREADY_EXISTS naming
  the holder (a dedupe conflict, a reused request_id, a schedule id taken):
  `get-existing` linking it.
- ResourceInfo: the resource named by an ALREADY_EXISTS when ErrorInfo names none.
- RetryInfo: `retry-later` with the seconds (a rate limit, a replica shutting down);
  BULK_ACTION_RUNNING and REQUEST_ID_BUSY: `retry-later` once the other has finished.
- NOT_FOUND naming the resource: `list` its collection; REQUEST_ID_REUSED: repeat the
  call with a new request_id.
- UNAUTHENTICATED, ROLE_INSUFFICIENT and PROJECT_DENIED: what key to send.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = ["ACTIONS", "Action", "Details", "Step", "next_steps", "unpack"]

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RetryInfo,
    error_details_pb2.ResourceInfo,
)

Details = Mapping[str, Message]
"""The status details by message name (`ErrorInfo`, `BadRequest`, ...), first of each."""


def unpack(details: Sequence[any_pb2.Any]) -> dict[str, Message]:
    """The known details of a google.rpc.Status, by message name."""
    found: dict[str, Message] = {}
    for packed in details:
        for cls in _DETAIL_TYPES:
            if packed.TypeName() == cls.DESCRIPTOR.full_name:
                message = cls()
                packed.Unpack(message)
                found.setdefault(cls.DESCRIPTOR.name, message)
    return found


@dataclass(frozen=True)
class Action:
    """A next step suggested for an error reason: another method, with its href."""

    rel: str
    rpc: str
    """The method's full name, e.g. `conveyor.v1.QueueService.ResumeQueue`."""
    resource: str
    """Which resource fills the method's path: `queue`, `task`, `schedule` or `project`."""
    hint: str


# ErrorInfo reason -> what the caller may do next.
ACTIONS: dict[str, tuple[Action, ...]] = {
    "QUEUE_PAUSED": (
        Action(
            "resume",
            "conveyor.v1.QueueService.ResumeQueue",
            "queue",
            "The queue is paused; resume it (operator) to lease from it again.",
        ),
    ),
    "PURGE_TOKEN_STALE": (
        Action(
            "refresh",
            "conveyor.v1.QueueService.GetQueue",
            "queue",
            "The queue's depth changed since its purge_confirm_token was read; read the "
            "queue again and purge with the new token.",
        ),
    ),
    "LEASE_STALE": (
        Action(
            "lease",
            "conveyor.v1.WorkerService.LeaseTasks",
            "project",
            "This lease expired and the task moved on; drop the work and lease again.",
        ),
    ),
    "SCHEDULE_CANCELLED": (
        Action(
            "create",
            "conveyor.v1.ScheduleService.CreateSchedule",
            "project",
            "The schedule is cancelled and read-only; create a new schedule with the "
            "changes instead.",
        ),
    ),
    "TASK_STATE_CONFLICT": (
        Action(
            "refresh",
            "conveyor.v1.TaskService.GetTask",
            "task",
            "The task is not in a state that allows this; read it to see where it is.",
        ),
    ),
}


# ErrorInfo reason -> the hint of repeating the same call once something has finished
# (no RetryInfo: how long that takes is not known).
_REPEAT_LATER: dict[str, Callable[[Mapping[str, str]], str]] = {
    "BULK_ACTION_RUNNING": lambda metadata: (
        f"{metadata.get('running') or 'Another bulk action'} is running in "
        f"{metadata.get('project') or 'the project'}; one bulk action runs at a time: "
        "repeat this request when it has finished."
    ),
    "REQUEST_ID_BUSY": lambda metadata: (
        "The first request with this request_id is still being answered; repeat this "
        "request with the same request_id to get its answer."
    ),
}


@dataclass(frozen=True)
class Step:
    """One next step, before a surface turns it into an `allowed_actions` item.

    `rpc` is the method to call (its REST route gives href and operation_id); `name`
    the resource name that fills that route's path, or, for a step that repeats the
    failed call (`fix-and-retry`, `retry-later`), empty: the surface links the request
    itself. `resource` is the kind of resource `name` is (`task`, `queue`, `project`,
    `schedule`), or empty when unknown and the surface must find it from the request.
    """

    rel: str
    hint: str
    rpc: str = ""
    name: str = ""
    resource: str = ""
    repeat: bool = False
    """The step repeats the failed call (with the fix the hint names)."""


_AT_MOST = re.compile(r"(?:must be )?(?:at most|1 to|up to) (\d+) (characters|bytes|chars)")
_LIST = {
    "tasks": "conveyor.v1.TaskService.ListTasks",
    "schedules": "conveyor.v1.ScheduleService.ListSchedules",
    "queues": "conveyor.v1.QueueService.ListQueues",
    "commands": "conveyor.v1.CommandService.ListCommands",
    "workers": "conveyor.v1.WorkerService.ListWorkers",
}
_GET = {
    "tasks": "conveyor.v1.TaskService.GetTask",
    "schedules": "conveyor.v1.ScheduleService.GetSchedule",
    "projects": "conveyor.v1.ProjectService.GetProject",
    "queues": "conveyor.v1.QueueService.GetQueue",
}


def fix_hint(field: str, description: str) -> str:
    """How to fix one bad field: "Shorten 'kind' to <= 200 chars." and the like."""
    size = _AT_MOST.search(description)
    if size is not None and "labels" not in description:
        unit = "chars" if size.group(2) != "bytes" else "bytes"
        verb = "Shorten" if unit == "chars" else "Shrink"
        return f"{verb} '{field}' to <= {size.group(1)} {unit}."
    if description == "is required":
        return f"Set '{field}'; it is required."
    return f"Fix '{field}': it {description}."


def next_steps(
    status: status_pb2.Status,
    details: Details,
    *,
    rename: Callable[[str], str] = lambda field: field,
) -> list[Step]:
    """What the caller may do next after `status`; `rename` turns a v1 field path
    (`task.kind`) into the name the caller used (a seed API's `activity_type`)."""
    steps: list[Step] = []
    bad = details.get("BadRequest")
    if isinstance(bad, error_details_pb2.BadRequest):
        for violation in bad.field_violations:
            field = rename(violation.field)
            steps.append(Step("fix-and-retry", fix_hint(field, violation.description), repeat=True))
    info = details.get("ErrorInfo")
    reason = info.reason if isinstance(info, error_details_pb2.ErrorInfo) else ""
    metadata: Mapping[str, str] = (
        info.metadata if isinstance(info, error_details_pb2.ErrorInfo) else {}
    )
    for action in ACTIONS.get(reason, ()):
        steps.append(Step(action.rel, action.hint, rpc=action.rpc, resource=action.resource))
    if status.code == code_pb2.ALREADY_EXISTS:
        existing = _existing(metadata, details.get("ResourceInfo"))
        if existing is not None:
            rpc, name = existing
            steps.append(
                Step(
                    "get-existing",
                    f"{name} already exists; read it instead of creating another.",
                    rpc=rpc,
                    name=name,
                )
            )
    if status.code == code_pb2.NOT_FOUND:
        missing = _collection(metadata, details.get("ResourceInfo"))
        if missing is not None:
            rpc, parent, collection = missing
            steps.append(
                Step(
                    "list",
                    f"No such resource; list the {collection} of {parent} to find it.",
                    rpc=rpc,
                    name=parent,
                )
            )
    if reason in _REPEAT_LATER:
        steps.append(Step("retry-later", _REPEAT_LATER[reason](metadata), repeat=True))
    if reason == "REQUEST_ID_REUSED":
        steps.append(
            Step(
                "retry-with-new-request-id",
                "This request_id was used for another request; send this one with a new "
                "request_id.",
                repeat=True,
            )
        )
    retry = details.get("RetryInfo")
    if isinstance(retry, error_details_pb2.RetryInfo):
        seconds = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        steps.append(
            Step("retry-later", f"Retry the same request after {seconds:g} s.", repeat=True)
        )
    if status.code == code_pb2.UNAUTHENTICATED:
        steps.append(
            Step(
                "authenticate",
                "Send `Authorization: Bearer <api key>` with a valid key of the project.",
            )
        )
    if reason == "PROJECT_DENIED" and metadata.get("project"):
        steps.append(
            Step(
                "authenticate",
                f"Use a key of {metadata['project']}; a key acts in its own project only.",
            )
        )
    if reason == "ROLE_INSUFFICIENT" and metadata.get("required_role"):
        steps.append(
            Step(
                "authenticate",
                f"Use a key with role {metadata['required_role']} (or one that includes it).",
            )
        )
    return steps


def _collection(
    metadata: Mapping[str, str], resource: Message | None
) -> tuple[str, str, str] | None:
    """(List method, parent, collection) for the missing resource a NOT_FOUND names."""
    candidates = [metadata.get("task", ""), metadata.get("resource", "")]
    if isinstance(resource, error_details_pb2.ResourceInfo):
        candidates.append(resource.resource_name)
    for name in candidates:
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == "projects" and parts[2] in _LIST:
            return _LIST[parts[2]], f"projects/{parts[1]}", parts[2]
    return None


def _existing(metadata: Mapping[str, str], resource: Message | None) -> tuple[str, str] | None:
    """(Get method, resource name) of the resource an ALREADY_EXISTS names."""
    candidates = [metadata.get("task", ""), metadata.get("resource", "")]
    if isinstance(resource, error_details_pb2.ResourceInfo):
        candidates.append(resource.resource_name)
    for name in candidates:
        parts = name.split("/")
        if len(parts) == 2 and parts[0] == "projects":
            return _GET["projects"], name
        if len(parts) == 4 and parts[0] == "projects" and parts[2] in _GET:
            return _GET[parts[2]], name
    return None
