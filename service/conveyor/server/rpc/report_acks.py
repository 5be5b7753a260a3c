"""Worker reports and their answers, single or batched (Connect and ReportTasks).

A report is parsed into an Item whatever message carried it (a `complete`, a `fail`,
an item of a ReportBatch, or of a ReportTasksRequest); each is fenced and answered on
its own, so one bad or stale item refuses that item alone. `Replies` puts a Connect
stream's answers in the order the messages came, folding the acks of one ReportBatch
into one ReportAckBatch and, for a worker that takes batches, the pushed leases into
one LeaseBatch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from conveyor.server.domain.lease_requests import TaskRef
from conveyor.server.domain.leases import Heartbeat, Report
from conveyor.server.errors import ConveyorError, PermissionDenied
from conveyor.server.render.tasks import fill_task
from conveyor.server.rpc import lease_messages
from conveyor.server.rpc.status import to_status_proto
from conveyor.server.store.task_rows import TaskRow
from conveyor.v1 import task_pb2, worker_pb2

__all__ = ["Item", "Pushed", "Replies", "ack_message", "batch_items", "lease_batch", "parse_item"]

ReportRequest = (
    worker_pb2.CompleteTaskRequest | worker_pb2.FailTaskRequest | (worker_pb2.ExtendLeaseRequest)
)


# Not frozen (treat it as immutable): a frozen dataclass sets each field through
# object.__setattr__, ~0.4 us more per item of a batch.
@dataclass(slots=True)
class Item:
    """One complete, fail or heartbeat, parsed (or why it could not be)."""

    which: str
    name: str
    lease_id: str
    value: Report | Heartbeat | ConveyorError
    batch: int = 0
    """Which ReportBatch of the messages being handled carried it (0: none)."""


class Pushed:
    """The leases pushed on one stream and not reported on it yet, by lease_id as sent.

    A report naming its task and lease_id exactly as they were pushed takes both from
    here instead of parsing them again: the task name's checks and two UUIDs were about
    half of what parsing a batch's item cost (profiled). Any other spelling is parsed as
    before. Only a cache: the stream's own count of outstanding leases is kept apart.
    """

    def __init__(self) -> None:
        self._leases: dict[str, tuple[str, TaskRef, uuid.UUID]] = {}

    def add(self, lease: task_pb2.Lease, row: TaskRow) -> None:
        """Remembers a filled Lease (its strings are read back, not formatted again)."""
        if row.lease_id is not None:  # a leased row has one
            self._leases[lease.lease_id] = (
                lease.task.name,
                TaskRef(row.project, row.id),
                row.lease_id,
            )

    def match(self, name: str, lease_id: str) -> tuple[TaskRef, uuid.UUID] | None:
        pushed = self._leases.get(lease_id)
        if pushed is None or pushed[0] != name:
            return None
        return pushed[1], pushed[2]

    def forget(self, item: Item) -> None:
        """Forgets the lease a parsed report names, however its lease_id was spelled."""
        value = item.value
        if isinstance(value, ConveyorError | Heartbeat) or not self._leases:
            return
        if self._leases.pop(item.lease_id, None) is None:
            self._leases.pop(str(value.lease_id), None)


def parse_item(
    which: str,
    request: ReportRequest,
    project: str,
    prefix: str,
    batch: int = 0,
    pushed: Pushed | None = None,
) -> Item:
    """`which` is complete, fail or heartbeat; a task of another project is refused.
    `pushed`: the stream's pushed leases, whose names and lease_ids need no parsing."""
    value: Report | Heartbeat | ConveyorError
    try:
        if isinstance(request, worker_pb2.CompleteTaskRequest):
            known = pushed.match(request.name, request.lease_id) if pushed else None
            value = lease_messages.completion(request, prefix, known)
        elif isinstance(request, worker_pb2.FailTaskRequest):
            known = pushed.match(request.name, request.lease_id) if pushed else None
            value = lease_messages.failure(request, prefix, known)
        else:
            value = lease_messages.heartbeat(request, prefix)
        if value.task.project != project:
            raise PermissionDenied(
                f"this call serves projects/{project}, not {value.task.name}",
                reason="PROJECT_DENIED",
                metadata={"project": value.task.project},
            )
    except ConveyorError as error:
        value = error
    return Item(which, request.name, request.lease_id, value, batch)


def batch_items(
    completes: Iterable[worker_pb2.CompleteTaskRequest],
    fails: Iterable[worker_pb2.FailTaskRequest],
    project: str,
    prefix: str,
    batch: int = 0,
    pushed: Pushed | None = None,
) -> list[Item]:
    """The items of a batch: its completes, then its fails (the order of their acks)."""
    items = [
        parse_item("complete", c, project, f"{prefix}completes[{i}].", batch, pushed)
        for i, c in enumerate(completes)
    ]
    items.extend(
        parse_item("fail", f, project, f"{prefix}fails[{i}].", batch, pushed)
        for i, f in enumerate(fails)
    )
    return items


def ack_message(
    item: Item, outcome: TaskRow | ConveyorError, with_task: bool
) -> worker_pb2.ReportAck:
    ack = worker_pb2.ReportAck()
    fill_ack(ack, item, outcome, with_task)
    return ack


def fill_ack(
    ack: worker_pb2.ReportAck, item: Item, outcome: TaskRow | ConveyorError, with_task: bool
) -> None:
    """Fills an ack in place (a message passed to a constructor is copied)."""
    ack.name = item.name
    ack.lease_id = item.lease_id
    if isinstance(outcome, ConveyorError):
        ack.status.CopyFrom(to_status_proto(outcome))
        return
    ack.status.SetInParent()  # OK: code 0
    if with_task:
        fill_task(ack.task, outcome)


class Replies:
    """A Connect stream's answers to the messages handled together, in their order."""

    def __init__(self, batches: bool, ack_tasks: bool, pushed: Pushed | None = None) -> None:
        self.out: list[worker_pb2.ConnectResponse] = []
        self._pushed = pushed
        self._batches = batches
        self._ack_tasks = ack_tasks
        self._open = 0
        """The ReportBatch whose ReportAckBatch is last in `out` (0: none)."""
        self._leased: list[TaskRow] = []

    def ack(self, item: Item, outcome: TaskRow | ConveyorError) -> None:
        if not item.batch:
            # A single report's ack carries the task, as it always did.
            self._add(worker_pb2.ConnectResponse(report_ack=ack_message(item, outcome, True)))
            return
        # Filled in place: an ack built apart is copied again by append().
        if self._open == item.batch:
            fill_ack(self.out[-1].report_acks.acks.add(), item, outcome, self._ack_tasks)
            return
        response = worker_pb2.ConnectResponse()
        fill_ack(response.report_acks.acks.add(), item, outcome, self._ack_tasks)
        self._add(response)
        self._open = item.batch

    def add(self, response: worker_pb2.ConnectResponse) -> None:
        self._add(response)

    def _add(self, response: worker_pb2.ConnectResponse) -> None:
        self.out.append(response)
        self._open = 0

    def leases(self, rows: list[TaskRow]) -> None:
        """Pushed leases: after the acks, in one LeaseBatch (when the worker takes
        batches) once every message is answered, else one `assignment` each at once."""
        if self._batches:
            self._leased.extend(rows)
            return
        for row in rows:
            self._add(assignment(row, self._pushed))

    def finish(self) -> list[worker_pb2.ConnectResponse]:
        if self._leased:
            self._add(lease_batch(self._leased, self._pushed))
            self._leased = []
        return self.out


def lease_batch(rows: list[TaskRow], pushed: Pushed | None = None) -> worker_pb2.ConnectResponse:
    """One LeaseBatch of `rows`, each remembered in `pushed`."""
    response = worker_pb2.ConnectResponse()
    leases = response.assignments.leases
    for row in rows:
        lease = leases.add()
        lease_messages.fill_lease(lease, row)
        if pushed is not None:
            pushed.add(lease, row)
    return response


def assignment(row: TaskRow, pushed: Pushed | None = None) -> worker_pb2.ConnectResponse:
    """One lease pushed alone (a worker that does not take batches)."""
    response = worker_pb2.ConnectResponse()
    lease_messages.fill_lease(response.assignment, row)
    if pushed is not None:
        pushed.add(response.assignment, row)
    return response
