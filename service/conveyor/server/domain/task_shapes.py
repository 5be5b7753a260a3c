"""new_task for the many tasks of one batch: each shape validated once.

The tasks of a BatchCreateTasks mostly differ only in their input (and labels): same
kind, queue, priority and options. `new_task` reads and checks some thirty fields per
task (~8 us); here a task whose set fields, other than input and labels, are all
plain values equal to an earlier item's (its "shape") gets that item's NewTask with
only what differs per task made anew: id and times, input, labels, request_id. Those
are checked by the same functions new_task uses; a task with any violation is
validated again by new_task itself, so its error, violations and their order are
exactly new_task's. A shape is only kept once new_task accepted it, so a refused
shape is validated in full for every item that has it.

A task with any message or repeated field set besides input and labels (a
retry_policy, a schedule_time, durations, dedupe_policy, depends_on) has no shape
and goes through new_task whole: those are rarer, and their values are messages
that cannot be compared cheaply.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import struct_pb2

from conveyor.server.domain import task_input
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.errors import Violations
from conveyor.server.store.task_inserts import NewTask
from conveyor.v1 import task_pb2

__all__ = ["Shapes", "shape_of"]

_INPUT_FIELD = task_pb2.Task.DESCRIPTOR.fields_by_name["input"]
_LABELS_FIELD = task_pb2.Task.DESCRIPTOR.fields_by_name["labels"]
_FIELDS = [f.name for f in dataclasses.fields(NewTask)]
_ID = _FIELDS.index("id")
_CREATE_TIME = _FIELDS.index("create_time")
_SCHEDULE_TIME = _FIELDS.index("schedule_time")
_INPUT = _FIELDS.index("input")
_LABELS = _FIELDS.index("labels")
_REQUEST_ID = _FIELDS.index("request_id")
_REQUEST_HASH = _FIELDS.index("request_hash")
_PLAIN = (str, int, float, bytes)  # bool is an int


def shape_of(task: task_pb2.Task) -> tuple[tuple[Any, ...] | None, struct_pb2.Value | None]:
    """The task's set fields other than input and labels, as (field, value) pairs (None
    when one of them is a message or a repeated field), and its input (None: unset).

    ListFields lists only the fields that are set, in one call: a task of the usual
    kind has two or three. The input it hands back is passed on rather than read again
    (each read of a message field makes a wrapper); fields are told apart by their
    descriptors, the same objects every time, rather than by name."""
    shape = []
    value_of_input = None
    for field, value in task.ListFields():
        if field is _INPUT_FIELD:
            value_of_input = value
        elif field is not _LABELS_FIELD:
            if not isinstance(value, _PLAIN):
                return None, value_of_input
            shape.append((field, value))
    return tuple(shape), value_of_input


class Shapes:
    """Validates the tasks of one batch (same project, creator and schedule)."""

    MAX_SHAPES = 32
    """After this many shapes in one batch, its remaining items go to new_task whole
    (a batch of all different tasks would pay for the shapes and gain nothing)."""

    def __init__(self, project: str, ids: TaskIds, *, creator: str = "", schedule: str = ""):
        self.project = project
        self.ids = ids
        self.creator = creator
        self.schedule = schedule
        self._made: dict[tuple[Any, ...], list[Any]] = {}  # a shape's NewTask field values

    def new_task(
        self,
        task: task_pb2.Task,
        *,
        request_id: str,
        request_hash: str | None,
        at: int,
    ) -> NewTask:
        """What task_input.new_task answers for `requests[at].task`, or raises as it does."""
        shape, value_of_input = (
            shape_of(task) if len(self._made) < self.MAX_SHAPES else (None, None)
        )
        if shape is not None:
            values = self._made.get(shape)
            if values is not None:
                made = self._like(values, task, value_of_input, request_id, request_hash)
                if made is not None:
                    return made
        new = task_input.new_task(
            task,
            project=self.project,
            request_id=request_id,
            ids=self.ids,
            prefix=f"requests[{at}].",
            schedule=self.schedule,
            request_hash=request_hash,
            creator=self.creator,
        )
        if shape is not None and shape not in self._made:
            # A snapshot: the caller may change `new` (its traceparent) afterwards.
            self._made[shape] = [getattr(new, name) for name in _FIELDS]
        return new

    def _like(
        self,
        values: list[Any],
        task: task_pb2.Task,
        value_of_input: struct_pb2.Value | None,
        request_id: str,
        request_hash: str | None,
    ) -> NewTask | None:
        """A NewTask of the same shape with this task's own fields, or None after a
        violation (new_task then reports it, with its paths: none are built here)."""
        v = Violations()
        input_text = task_input.input_text(v, value_of_input, "")
        labels = task.labels
        labels_text = task_input.labels_text(v, labels, "") if labels else "{}"
        if request_id:
            task_input.check_text(v, request_id, "", task_input.MAX_REQUEST_ID)
        if v.items:
            return None
        values = values.copy()
        # A shape has no schedule_time (a message field): the task is due at its creation.
        task_id, create_time = self.ids.next()
        values[_ID] = task_id
        values[_CREATE_TIME] = values[_SCHEDULE_TIME] = create_time
        values[_INPUT] = input_text
        values[_LABELS] = labels_text
        values[_REQUEST_ID] = request_id or None
        values[_REQUEST_HASH] = request_hash if request_id else None
        return NewTask(*values)
