"""CreatedAnswers renders each create exactly as created_message does, templates or not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from created_tasks_support import full_task  # type: ignore[import-not-found]
from google.protobuf import struct_pb2

from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.domain.task_input import new_task
from conveyor.server.render.tasks import CreatedAnswers, created_message
from conveyor.server.store.task_inserts import Inserted, NewTask
from conveyor.v1 import task_pb2

IDS = TaskIds()
NOW = datetime(2026, 12, 7, 19, 30, tzinfo=UTC)


def _inserted(new: NewTask, *, execution_timeout_ms: int | None = None) -> Inserted:
    root = new.parent_task or new.id
    return Inserted(root, 3, "EXPONENTIAL", 1000, 60_000, NOW, execution_timeout_ms)


def _tasks() -> list[task_pb2.Task]:
    plain = [task_pb2.Task(kind="k", queue="q") for _ in range(3)]
    plain[0].input.struct_value.fields["i"].number_value = 0
    plain[1].labels["a"] = "1"  # labels, no input, after a template made with an input
    plain[2].input.null_value = struct_pb2.NULL_VALUE  # a JSON null shows unset
    full = full_task()
    return [*plain, full, task_pb2.Task(kind="k", queue="q", priority=9), full]


def test_every_answer_equals_created_message() -> None:
    answers = CreatedAnswers()
    parent = uuid.uuid4()
    for round_ in range(2):  # the second round renders from the templates
        for source in _tasks():
            new = new_task(source, project="p", request_id="", ids=IDS, creator="keys/k")
            if round_:
                new.parent_task = parent
            inserted = _inserted(new, execution_timeout_ms=600_000 if round_ else None)
            into = task_pb2.Task()
            answers.fill(new, inserted, source, into)
            assert into == created_message(new, inserted, source)


def test_templates_serve_creates_of_other_statements() -> None:
    # A servicer keeps its answers across calls: each single create's flush has its
    # own statement time, which the answer shows.
    answers = CreatedAnswers()
    for minutes in (0, 1, 2):
        source = task_pb2.Task(kind="k", queue="q")
        new = new_task(source, project="p", request_id="", ids=IDS)
        inserted = Inserted(
            new.id, 3, "EXPONENTIAL", 1000, 60_000, NOW + timedelta(minutes=minutes)
        )
        into = task_pb2.Task()
        answers.fill(new, inserted, source, into)
        assert into == created_message(new, inserted, source)
        assert into.update_time.ToDatetime(UTC) == inserted.update_time
    assert len(answers._templates) == 1  # one template, whatever the statement's time


def test_beyond_its_templates_each_is_still_rendered_alike() -> None:
    answers = CreatedAnswers()
    for i in range(CreatedAnswers.MAX_TEMPLATES + 5):
        source = task_pb2.Task(kind=f"k{i}")
        new = new_task(source, project="p", request_id="", ids=IDS)
        inserted = _inserted(new)
        into = task_pb2.Task()
        answers.fill(new, inserted, source, into)
        assert into == created_message(new, inserted, source)
