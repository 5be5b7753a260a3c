"""WorkerService messages <-> lease domain values (shared by the unary RPCs and Connect)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from conveyor.client._json import from_struct, from_value
from conveyor.server.domain import leases
from conveyor.server.domain.lease_requests import TaskRef
from conveyor.server.domain.leases import (
    MAX_RESULT_BYTES,
    Completion,
    Extension,
    Failure,
    Heartbeat,
)
from conveyor.server.domain.task_input import compact_json
from conveyor.server.errors import InvalidArgument, Violations
from conveyor.server.render.convert import set_timestamp, timestamp
from conveyor.server.render.tasks import fill_task
from conveyor.server.store.task_rows import TaskRow
from conveyor.v1 import task_pb2, worker_pb2

_SPELLING_GROWTH = 12
"""How much longer json.dumps' default spelling of a value can be than compact_json's:
a character beyond the BMP becomes a 12-character surrogate pair escape."""

Pushed = tuple[TaskRef, uuid.UUID]
"""A report's task and lease_id as the server pushed them (rpc/report_acks.Pushed): a
report that names both exactly as sent needs neither parsed again."""


def _reported_lease(
    request: worker_pb2.CompleteTaskRequest | worker_pb2.FailTaskRequest, prefix: str
) -> Pushed:
    """The task and lease_id a report names, parsed (a lease this stream did not push, or
    one spelled otherwise than it was pushed)."""
    return (
        leases.task_ref(request.name, f"{prefix}name"),
        leases.lease_token(request.lease_id, f"{prefix}lease_id"),
    )


def completion(
    request: worker_pb2.CompleteTaskRequest, prefix: str = "", pushed: Pushed | None = None
) -> Completion:
    task, lease_id = pushed or _reported_lease(request, prefix)
    result_json = None
    if request.HasField("result") and request.result.WhichOneof("kind") is not None:
        # By orjson (compact_json: several times cheaper than json.dumps with options,
        # which builds an encoder per call); jsonb stores the same value either way.
        # The size limit counts json.dumps' spelling (", ", ": ", non-ASCII escaped):
        # a text that may be near it is spelled so again, and the limit does not move.
        try:
            plain = from_value(request.result)
            result_json = compact_json(plain)
            if len(result_json) * _SPELLING_GROWTH > MAX_RESULT_BYTES:
                result_json = json.dumps(plain, allow_nan=False)
        except ValueError:
            raise InvalidArgument.of(f"{prefix}result", "numbers must be finite") from None
    return Completion.check(
        task, lease_id, result_json, request.summary, request.resume_token, prefix
    )


def failure(
    request: worker_pb2.FailTaskRequest, prefix: str = "", pushed: Pushed | None = None
) -> Failure:
    task, lease_id = pushed or _reported_lease(request, prefix)
    error: dict[str, Any] = {
        "type": request.error.type,
        "message": request.error.message,
        "retryable": request.retryable,
    }
    if request.error.HasField("details"):
        error["details"] = from_struct(request.error.details)
    return Failure.check(task, lease_id, error, request.retryable, prefix)


def heartbeat(request: worker_pb2.ExtendLeaseRequest, prefix: str = "") -> Heartbeat:
    task = leases.task_ref(request.name, f"{prefix}name")
    lease_id = leases.lease_token(request.lease_id, f"{prefix}lease_id")
    lease_ms = None
    if request.HasField("lease_duration"):
        v = Violations()
        lease_ms = leases.lease_ms(
            v,
            request.lease_duration.seconds,
            request.lease_duration.nanos,
            f"{prefix}lease_duration",
        )
        v.raise_if_any()
    progress = None
    if request.HasField("progress"):
        progress = from_struct(request.progress)
    return Heartbeat(task, lease_id, lease_ms, progress)


def lease_message(row: TaskRow) -> task_pb2.Lease:
    lease = task_pb2.Lease()
    fill_lease(lease, row)
    return lease


def fill_lease(lease: task_pb2.Lease, row: TaskRow) -> None:
    """Fills a Lease in place: building the Task apart and passing it to the Lease's
    constructor copies it (the largest cost of a push, profiled), and so does passing
    built Leases to a LeaseBatch; `leases.add()` and this copy nothing."""
    fill_task(lease.task, row)
    lease.lease_id = str(row.lease_id)
    if row.lease_expire_time is not None:
        set_timestamp(lease.lease_expire_time, row.lease_expire_time)
    if row.traceparent:
        lease.traceparent = row.traceparent


def extension_message(
    name: str, lease_id: str, extension: Extension | None
) -> worker_pb2.ExtendLeaseResponse:
    """A heartbeat answer; None (the lease is lost) has no expire time and says stop."""
    if extension is None:
        return worker_pb2.ExtendLeaseResponse(name=name, lease_id=lease_id, cancel_requested=True)
    return worker_pb2.ExtendLeaseResponse(
        name=name,
        lease_id=lease_id,
        lease_expire_time=timestamp(extension.lease_expire_time),
        cancel_requested=extension.cancel_requested,
    )
