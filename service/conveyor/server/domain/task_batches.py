"""Batch creates: one outcome per item from a bulk insert, one error for an atomic
batch, and the request hash a create is remembered by."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.server.domain import request_ids
from conveyor.server.domain.task_dedupe import Created, outcome
from conveyor.server.errors import ConveyorError, InvalidArgument, NotFound, Violations
from conveyor.server.store.task_inserts import NewTask, Outcome, Result
from conveyor.v1 import task_pb2, task_service_pb2

__all__ = ["collect", "merge_errors", "request_hash"]


def collect(
    items: Sequence[tuple[int, NewTask]],
    inserted: Sequence[Result],
    results: list[Created | ConveyorError | None],
    parent: str,
) -> list[ConveyorError]:
    """Fills `results` from a bulk insert's outcomes; returns the refusals."""
    if any(r.outcome is Outcome.NO_PROJECT for r in inserted):
        # Every item shares the project: the whole call is NOT_FOUND.
        raise NotFound(f"{parent} does not exist", metadata={"resource": parent})
    failures: list[ConveyorError] = []
    for (i, new), result in zip(items, inserted, strict=True):
        if result.outcome is Outcome.CREATED:  # the usual outcome, without outcome()'s prefix
            results[i] = Created(new=new, inserted=result.inserted)
            continue
        if result.outcome is Outcome.ABORTED:
            continue  # atomic, and another item's refusal is reported
        try:
            results[i] = outcome(result, new, parent, f"requests[{i}].")
        except ConveyorError as error:
            results[i] = error
            failures.append(error)
    return failures


def merge_errors(errors: Sequence[ConveyorError]) -> ConveyorError:
    """One error for an atomic batch: every field violation, else the first error."""
    invalid = [e for e in errors if isinstance(e, InvalidArgument)]
    if not invalid:
        return errors[0]
    v = Violations()
    for error in invalid:
        v.items.extend(error.violations)
    try:
        v.raise_if_any()
    except InvalidArgument as merged:
        return merged
    return invalid[0]


def request_hash(parent: str, task: task_pb2.Task, request_id: str) -> str | None:
    """The request_hash of a create: CreateTask and a batch item with the same parent and
    task hash alike. Only computed for creates that carry a request_id."""
    if not request_id:
        return None
    return request_ids.request_hash(task_service_pb2.CreateTaskRequest(parent=parent, task=task))
