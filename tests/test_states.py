"""The transition table agrees with itself, the proto enum and the database's CHECK."""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg.rows import TupleRow

from conveyor.server import states
from conveyor.server.errors import FailedPrecondition
from conveyor.server.states import TABLE, TERMINAL, WAITING, State
from conveyor.v1 import enums_pb2


async def test_database_states_are_exactly_the_state_enum(
    db_conn: psycopg.AsyncConnection[TupleRow],
) -> None:
    cur = await db_conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tasks_state_valid'"
    )
    row = await cur.fetchone()
    assert row is not None
    assert set(re.findall(r"'([A-Z_]+)'", row[0])) == {s.value for s in State}


async def test_the_database_refuses_a_state_outside_the_table(
    db_conn: psycopg.AsyncConnection[TupleRow],
) -> None:
    await db_conn.execute("INSERT INTO projects (id, webhook_secret) VALUES ('st', 's')")
    insert = (
        "INSERT INTO tasks (project, id, queue, kind, state, root_task)"
        " VALUES ('st', %(id)s, 'q', 'k', %(state)s, %(id)s)"
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        async with db_conn.transaction():
            await db_conn.execute(
                insert, {"id": "01900000-0000-7000-8000-000000000001", "state": "PAUSED"}
            )
    # The state's required columns are checked too: RUNNING needs a lease.
    with pytest.raises(psycopg.errors.CheckViolation):
        async with db_conn.transaction():
            await db_conn.execute(
                insert, {"id": "01900000-0000-7000-8000-000000000002", "state": "RUNNING"}
            )


def test_state_enum_matches_the_proto() -> None:
    names = {n.removeprefix("TASK_STATE_") for n in enums_pb2.TaskState.keys()}  # noqa: SIM118
    assert names - {"UNSPECIFIED"} == {s.value for s in State}
    for state in State:
        assert State.from_proto(state.proto) is state


def test_every_transition_has_an_event_and_the_sources_design_gives_it() -> None:
    actions = {action for _, action in TABLE}
    assert actions == set(states.EVENT_TYPES)
    # Written out from DESIGN.md's state list, not derived from TABLE, so a wrong edge
    # in the table (or in sources()) shows up here.
    S = State
    expected = {
        "promote": {S.SCHEDULED},
        "approve": {S.AWAITING_APPROVAL},
        "approve_later": {S.AWAITING_APPROVAL},
        "reject": {S.AWAITING_APPROVAL},
        "lease": {S.QUEUED},
        "debounce": {S.QUEUED},
        "succeed": {S.RUNNING},
        "retry": {S.RUNNING},
        "fail": {S.RUNNING},
        "interrupt": {S.RUNNING},
        "cancel": {S.SCHEDULED, S.QUEUED, S.AWAITING_APPROVAL},
        "requeue": {S.FAILED, S.CANCELLED, S.INTERRUPTED},
    }
    assert {action: set(states.sources(action)) for action in actions} == expected
    # Events are task.<something>, as DESIGN.md's Event section lists them.
    assert all(t.startswith("task.") for t in states.EVENT_TYPES.values())


def test_terminal_states_only_leave_by_requeue() -> None:
    for (source, action), target in TABLE.items():
        if source in TERMINAL:
            assert action == "requeue" and target is State.QUEUED
    assert TERMINAL | WAITING | {State.RUNNING} == set(State)
    assert not TERMINAL & WAITING


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("action", sorted({a for _, a in TABLE}))
def test_target_allows_the_table_and_refuses_the_rest(state: State, action: str) -> None:
    if (state, action) in TABLE:
        assert states.target(state, action) is TABLE[(state, action)]
    else:
        with pytest.raises(FailedPrecondition) as caught:
            states.target(state, action, subject="projects/p/tasks/t")
        assert caught.value.reason == "TASK_STATE_CONFLICT"
        assert caught.value.violations[0].subject == "projects/p/tasks/t"


def test_cancel_reaches_cancelled_from_every_waiting_state_only() -> None:
    assert set(states.sources("cancel")) == set(WAITING)
    assert all(TABLE[(s, "cancel")] is State.CANCELLED for s in WAITING)


def test_initial_state() -> None:
    assert states.initial(requires_approval=True, due=False) is State.AWAITING_APPROVAL
    assert states.initial(requires_approval=True, due=True) is State.AWAITING_APPROVAL
    assert states.initial(requires_approval=False, due=True) is State.QUEUED
    assert states.initial(requires_approval=False, due=False) is State.SCHEDULED
