"""The task state machine: every allowed transition, in one table.

The store's guarded UPDATEs (`WHERE state IN (...)`) and the CHECK constraints in
the schema enforce the same table in the database: `tests/test_states.py` checks the
states agree, and `tests/test_state_transitions.py` that every transition a query
declares (`-- transitions:` above its UPDATE) is an edge of this table. Names are the
stored strings; the proto enum is TASK_STATE_<name>.
"""

from __future__ import annotations

from enum import StrEnum

from conveyor.server.errors import FailedPrecondition, PreconditionViolation
from conveyor.v1 import enums_pb2


class State(StrEnum):
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"

    @property
    def proto(self) -> enums_pb2.TaskState.ValueType:
        return enums_pb2.TaskState.Value(f"TASK_STATE_{self.value}")

    @classmethod
    def from_proto(cls, value: int) -> State:
        return cls(enums_pb2.TaskState.Name(value).removeprefix("TASK_STATE_"))  # type: ignore[arg-type]

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.INTERRUPTED})
WAITING = frozenset({State.SCHEDULED, State.QUEUED, State.AWAITING_APPROVAL})


# (from-state, transition) -> to-state. Anything missing is refused.
TABLE: dict[tuple[State, str], State] = {
    (State.SCHEDULED, "promote"): State.QUEUED,
    (State.AWAITING_APPROVAL, "approve"): State.QUEUED,
    (State.AWAITING_APPROVAL, "approve_later"): State.SCHEDULED,
    (State.AWAITING_APPROVAL, "reject"): State.CANCELLED,
    (State.QUEUED, "lease"): State.RUNNING,
    # A DEBOUNCE dedupe pushes a ready task's schedule_time back (task_dedupe.sql).
    (State.QUEUED, "debounce"): State.SCHEDULED,
    (State.RUNNING, "succeed"): State.SUCCEEDED,
    (State.RUNNING, "retry"): State.SCHEDULED,
    (State.RUNNING, "fail"): State.FAILED,
    (State.RUNNING, "interrupt"): State.INTERRUPTED,
    (State.SCHEDULED, "cancel"): State.CANCELLED,
    (State.QUEUED, "cancel"): State.CANCELLED,
    (State.AWAITING_APPROVAL, "cancel"): State.CANCELLED,
    (State.FAILED, "requeue"): State.QUEUED,
    (State.CANCELLED, "requeue"): State.QUEUED,
    (State.INTERRUPTED, "requeue"): State.QUEUED,
}

EVENT_TYPES: dict[str, str] = {
    "promote": "task.queued",
    "approve": "task.queued",
    "approve_later": "task.scheduled",
    "reject": "task.cancelled",
    "lease": "task.started",
    "debounce": "task.updated",
    "succeed": "task.succeeded",
    "retry": "task.retrying",
    "fail": "task.failed",
    "interrupt": "task.interrupted",
    "cancel": "task.cancelled",
    "requeue": "task.queued",
}


def sources(action: str) -> tuple[State, ...]:
    """The states an action may start from (the guard of its UPDATE)."""
    return tuple(state for (state, name) in TABLE if name == action)


def target(state: State, action: str, subject: str = "") -> State:
    """The state after `action`, or FailedPrecondition when the table forbids it."""
    try:
        return TABLE[(state, action)]
    except KeyError:
        raise FailedPrecondition(
            f"a {state.value} task cannot {action.replace('_', ' ')}",
            reason="TASK_STATE_CONFLICT",
            metadata={"state": state.value, "action": action},
            violations=[PreconditionViolation("STATE", subject, f"task is {state.value}")],
        ) from None


def initial(*, requires_approval: bool, due: bool) -> State:
    """The state a new task starts in."""
    if requires_approval:
        return State.AWAITING_APPROVAL
    return State.QUEUED if due else State.SCHEDULED
