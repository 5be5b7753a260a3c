"""A BatchCreateTasks answer written as bytes equals the one built message by message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from created_tasks_support import full_task  # type: ignore[import-not-found]
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.domain.task_input import new_task
from conveyor.server.render.created_batch import CreatedBatch
from conveyor.server.render.tasks import CreatedAnswers, created_message
from conveyor.server.store.task_inserts import Inserted, NewTask
from conveyor.v1 import task_pb2, task_service_pb2

IDS = TaskIds()
NOW = datetime(2026, 12, 7, 19, 30, 1, 123456, tzinfo=UTC)


def _sources() -> list[task_pb2.Task]:
    plain = [task_pb2.Task(kind="k", queue="q") for _ in range(4)]
    plain[0].input.struct_value.fields["i"].number_value = 0
    plain[1].labels["a"] = "1"
    plain[1].labels["é"] = "ü" * 200  # lengths past one byte of varint, non-ASCII
    plain[2].input.null_value = struct_pb2.NULL_VALUE  # a JSON null shows unset
    plain[3].input.string_value = "x" * 20_000  # three bytes of length
    full = full_task()
    empty = task_pb2.Task(kind="k", queue="q")
    empty.input.struct_value.SetInParent()  # {}: set, and empty
    return [*plain, full, task_pb2.Task(kind="k", queue="q", priority=9), full, empty]


def _created(
    project: str, parent: uuid.UUID | None
) -> list[tuple[NewTask, Inserted, task_pb2.Task]]:
    made = []
    for i, source in enumerate(_sources()):
        new = new_task(source, project=project, request_id="", ids=IDS, creator="keys/k")
        new.parent_task = parent
        root = parent or new.id
        inserted = Inserted(
            root, 3, "EXPONENTIAL", 1000, 60_000, NOW + timedelta(microseconds=i % 2), None
        )
        made.append((new, inserted, source))
    return made


def test_the_answer_equals_created_message_for_every_task() -> None:
    answers = CreatedAnswers()
    for round_ in range(2):  # the second round uses the templates made by the first
        parent = uuid.uuid4() if round_ else None
        made = _created("p" * (round_ * 60 + 1), parent)
        batch = CreatedBatch(answers)
        for new, inserted, source in made:
            batch.created(new, inserted, source)
        response = batch.response()
        assert len(response.results) == len(made)
        for result, (new, inserted, source) in zip(response.results, made, strict=True):
            assert result.WhichOneof("result") == "task"
            assert result.task == created_message(new, inserted, source)


def test_other_results_keep_their_places() -> None:
    answers = CreatedAnswers()
    made = _created("p", None)[:3]
    refused = task_service_pb2.BatchCreateTaskResult(
        status=status_pb2.Status(code=3, message="requests[1].task.kind: is required")
    )
    existing = task_service_pb2.BatchCreateTaskResult(
        existing_task=task_pb2.Task(name="projects/p/tasks/x", kind="k")
    )
    batch = CreatedBatch(answers)
    batch.created(*made[0])
    batch.other(refused)
    batch.created(*made[1])
    batch.other(existing)
    batch.created(*made[2])
    response = batch.response()
    assert [r.WhichOneof("result") for r in response.results] == [
        "task",
        "status",
        "task",
        "existing_task",
        "task",
    ]
    assert response.results[1] == refused
    assert response.results[3] == existing
    assert response.results[4].task == created_message(*made[2])


def test_an_empty_batch_answers_no_results() -> None:
    assert CreatedBatch(CreatedAnswers()).response() == task_service_pb2.BatchCreateTasksResponse()
