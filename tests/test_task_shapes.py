"""A batch validates each shape of task once: every item still gets exactly new_task's
NewTask, or exactly its error (same violations, same order)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf import duration_pb2, struct_pb2

from conveyor.server.domain import task_input, task_shapes
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.errors import InvalidArgument
from conveyor.server.store.task_inserts import NewTask
from conveyor.v1 import task_pb2

PER_TASK = {"id", "create_time", "schedule_time"}


def _input(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    if isinstance(data, dict):
        for key, item in data.items():
            value.struct_value.fields[key].CopyFrom(_input(item))
    elif isinstance(data, str):
        value.string_value = data
    elif isinstance(data, float | int):
        value.number_value = data
    elif data is None:
        value.null_value = struct_pb2.NULL_VALUE
    return value


def _items() -> list[tuple[task_pb2.Task, str]]:
    """(task, request_id) pairs: shapes repeated with good and bad per-task fields."""
    nan = struct_pb2.Value(number_value=float("nan"))
    items: list[tuple[task_pb2.Task, str]] = []
    for i in range(3):
        items.append((task_pb2.Task(kind="k", queue="q", input=_input({"i": i})), ""))
        items.append((task_pb2.Task(kind="k", queue="q", input=_input({"i": i})), f"r{i}"))
        items.append((task_pb2.Task(kind="k", queue="q", priority=2, labels={"a": str(i)}), ""))
    items += [
        (task_pb2.Task(kind="k", queue="q", input=nan), ""),  # bad input, known shape
        (task_pb2.Task(kind="k", queue="q", input=_input("a\x00")), ""),
        (task_pb2.Task(kind="k", queue="q", input=_input("x" * 70_000)), ""),
        (task_pb2.Task(kind="k", queue="q", labels={"a": "x\x00"}), ""),
        (task_pb2.Task(kind="k", queue="q", labels={"Bad Key": "1"}), ""),
        (task_pb2.Task(kind="k", queue="q"), "x" * 200),  # bad request_id
        (task_pb2.Task(kind="k", queue="q", input=nan, labels={"a": "\x00"}), "x" * 200),
        (task_pb2.Task(kind="k", queue="q", input=_input(None)), ""),  # JSON null: unset
        (task_pb2.Task(kind="k", queue="q", input=_input({})), ""),
        (task_pb2.Task(kind="", queue="q", input=_input(1)), ""),  # bad shapes, twice
        (task_pb2.Task(kind="", queue="q", input=_input(2)), ""),
        (task_pb2.Task(kind="k", priority=12, input=nan), ""),
        (task_pb2.Task(kind="k", priority=12, input=nan), ""),
        (task_pb2.Task(kind="k", requires_approval=True), ""),
        (task_pb2.Task(kind="k", requires_approval=True, correlation_id="c"), "r9"),
        (task_pb2.Task(kind="k", lease_duration=duration_pb2.Duration(seconds=60)), ""),
        (task_pb2.Task(kind="k", depends_on=["projects/p/tasks/nope"]), ""),
    ]
    return items


def _outcome(make: Any, task: task_pb2.Task, request_id: str, i: int) -> Any:
    try:
        new = make(task, request_id, f"requests[{i}].")
    except InvalidArgument as error:
        return ("refused", str(error), [(v.field, v.description) for v in error.violations])
    assert isinstance(new, NewTask)
    due = new.schedule_time == new.create_time
    fields = {f.name: getattr(new, f.name) for f in dataclasses.fields(NewTask)}
    return ("made", due, {k: v for k, v in fields.items() if k not in PER_TASK})


def test_each_item_gets_what_new_task_gives() -> None:
    ids = TaskIds()
    shapes = task_shapes.Shapes("p", ids, creator="keys/k")

    def by_shapes(task: task_pb2.Task, request_id: str, prefix: str) -> NewTask:
        return shapes.new_task(
            task, request_id=request_id, request_hash=request_id and "h", at=int(prefix[9:-2])
        )

    def alone(task: task_pb2.Task, request_id: str, prefix: str) -> NewTask:
        return task_input.new_task(
            task,
            project="p",
            request_id=request_id,
            ids=ids,
            prefix=prefix,
            request_hash=request_id and "h",
            creator="keys/k",
        )

    for _ in range(2):  # the second time round every good shape is known
        for i, (task, request_id) in enumerate(_items()):
            assert _outcome(by_shapes, task, request_id, i) == _outcome(alone, task, request_id, i)


def test_a_known_shape_is_not_validated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = task_input.new_task

    def counted(task: task_pb2.Task, **kwargs: Any) -> NewTask:
        calls.append(task.kind)
        return real(task, **kwargs)

    monkeypatch.setattr(task_input, "new_task", counted)
    shapes = task_shapes.Shapes("p", TaskIds())
    made = [
        shapes.new_task(
            task_pb2.Task(kind="k", input=_input({"i": i})),
            request_id="",
            request_hash=None,
            at=0,
        )
        for i in range(5)
    ]
    assert calls == ["k"]
    assert [m.input for m in made] == [f'{{"i":{i}}}' for i in range(5)]
    assert len({m.id for m in made}) == 5
    # A message field (here a duration) has no shape: validated whole each time.
    for _ in range(2):
        shapes.new_task(
            task_pb2.Task(kind="d", lease_duration=duration_pb2.Duration(seconds=60)),
            request_id="",
            request_hash=None,
            at=0,
        )
    assert calls == ["k", "d", "d"]


def test_the_first_items_newtask_changing_later_does_not_change_the_others() -> None:
    shapes = task_shapes.Shapes("p", TaskIds())
    first = shapes.new_task(task_pb2.Task(kind="k"), request_id="", request_hash=None, at=0)
    first.traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    second = shapes.new_task(task_pb2.Task(kind="k"), request_id="", request_hash=None, at=0)
    assert second.traceparent is None
    assert second.id != first.id


def test_shape_of() -> None:
    kind = task_pb2.Task.DESCRIPTOR.fields_by_name["kind"]
    shape, value = task_shapes.shape_of(task_pb2.Task(kind="k", input=_input(1), labels={"a": "b"}))
    assert shape == ((kind, "k"),)
    assert value == _input(1)
    assert task_shapes.shape_of(task_pb2.Task(kind="k")) == (((kind, "k"),), None)
    assert task_shapes.shape_of(task_pb2.Task(kind="k", depends_on=["x"]))[0] is None
    assert task_shapes.shape_of(task_pb2.Task(retry_policy=task_pb2.RetryPolicy()))[0] is None
