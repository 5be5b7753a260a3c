"""The client's request building and JSON conversion, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import struct_pb2

from conveyor.client import PermanentError, TaskCancelled, TaskContext
from conveyor.client import _requests as req
from conveyor.client._hello import default_worker_id, sdk_version
from conveyor.client._json import from_value, to_struct, to_value
from conveyor.client._registry import Registry
from conveyor.v1 import enums_pb2, task_pb2


@pytest.mark.parametrize(
    "data",
    [None, True, 0, -3, 2.5, "x", [], {}, [1, [2, {"a": None}]], {"n": 1, "s": "é", "l": [True]}],
)
def test_json_round_trips_with_integers_kept(data: object) -> None:
    assert from_value(to_value(data)) == data
    assert type(from_value(to_value(data))) is type(data)


def test_json_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError, match=r"\$\.a\[1\]: set is not JSON"):
        to_value({"a": [1, {1, 2}]})
    with pytest.raises(TypeError, match="keys must be strings"):
        to_value({1: "x"})
    with pytest.raises(TypeError, match="not a JSON number"):
        to_value(float("nan"))
    assert to_value((1, 2)).list_value.values[1].number_value == 2
    assert from_value(struct_pb2.Value()) is None
    assert to_struct({"a": 1}).fields["a"].number_value == 1


def test_task_options_fill_every_field() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    request = req.create_task(
        "alpha",
        "email.send",
        {"to": "ada"},
        None,
        {
            "queue": "emails",
            "priority": 3,
            "labels": {"team": "core"},
            "schedule_time": when,
            "lease_duration": timedelta(seconds=90),
            "retry_policy": {
                "max_attempts": 5,
                "backoff": "linear",
                "initial_backoff": 0.5,
                "max_backoff": timedelta(minutes=1),
            },
            "dedupe_policy": {"key": "k", "window": 60, "on_conflict": "reject"},
            "concurrency_key": "c",
            "concurrency_limit": 2,
            "requires_approval": True,
            "approval_timeout": timedelta(hours=1),
            "correlation_id": "corr",
            "parent_task": "projects/alpha/tasks/p",
            "callback_url": "https://example.com/hook",
            "resume_token": "tok",
        },
    )
    assert request.parent == "projects/alpha"
    assert len(request.request_id) == 32  # a fresh one: retries are safe by default
    task = request.task
    assert (task.kind, task.queue, task.priority) == ("email.send", "emails", 3)
    assert from_value(task.input) == {"to": "ada"}
    assert dict(task.labels) == {"team": "core"}
    assert task.schedule_time.ToDatetime(tzinfo=UTC) == when
    assert task.lease_duration.seconds == 90
    assert task.retry_policy.max_attempts == 5
    assert task.retry_policy.backoff == enums_pb2.BACKOFF_LINEAR
    assert task.retry_policy.initial_backoff.nanos == 500_000_000
    assert task.retry_policy.max_backoff.seconds == 60
    assert task.dedupe_policy.on_conflict == enums_pb2.ON_CONFLICT_REJECT
    assert task.dedupe_policy.window.seconds == 60
    assert (task.concurrency_key, task.concurrency_limit) == ("c", 2)
    assert task.requires_approval and task.approval_timeout.seconds == 3600
    assert (task.correlation_id, task.parent_task, task.resume_token) == (
        "corr",
        "projects/alpha/tasks/p",
        "tok",
    )
    assert req.create_task("p", "k", None, "", {}).request_id == ""
    assert not req.create_task("p", "k", None, None, {}).task.HasField("input")


def test_unknown_options_and_names_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown task option"):
        req.task("k", None, {"queeu": "x"})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(TypeError, match="unknown filter field"):
        req.task_filter({"state": ["running"]})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ValueError):
        req.task_filter({"states": ["sleeping"]})
    with pytest.raises(TypeError):
        req.update_queue("p", "q", None, None, None)


def test_batch_items_and_filters() -> None:
    request = req.batch_create_tasks(
        "projects/alpha",
        [task_pb2.Task(kind="a"), {"kind": "b", "input": [1], "request_id": "r", "priority": 2}],
        True,
    )
    assert request.atomic and request.parent == "projects/alpha"
    assert [r.task.kind for r in request.requests] == ["a", "b"]
    assert request.requests[1].request_id == "r"
    assert request.requests[1].task.priority == 2

    base = task_pb2.TaskFilter(kinds=["x"])
    message = req.task_filter(
        {
            "states": ["running", "TASK_STATE_QUEUED", enums_pb2.TASK_STATE_FAILED],
            "queues": ["q"],
            "priorities": [1, "high"],
            "labels": {"a": "b"},
            "search": "s",
            "created_after": datetime(2030, 1, 1, tzinfo=UTC),
        },
        base,
    )
    assert list(message.states) == [
        enums_pb2.TASK_STATE_RUNNING,
        enums_pb2.TASK_STATE_QUEUED,
        enums_pb2.TASK_STATE_FAILED,
    ]
    assert list(message.kinds) == ["x"] and list(message.queues) == ["q"]
    assert list(message.priorities) == ["1", "high"]
    assert message.search == "s" and message.create_time_after.seconds > 0


def test_names_take_short_ids() -> None:
    assert req.child("alpha", "tasks", "abc") == "projects/alpha/tasks/abc"
    assert req.child("alpha", "tasks", "projects/b/tasks/x") == "projects/b/tasks/x"
    assert req.parent("projects/x") == "projects/x"


def test_worker_id_and_sdk_version() -> None:
    worker_id = default_worker_id()
    assert 1 <= len(worker_id) <= 63
    assert all(c.isdigit() or c == "-" or "a" <= c <= "z" for c in worker_id)
    assert sdk_version().startswith("conveyor-python/")


def test_context_turns_outcomes_into_reports() -> None:
    lease = task_pb2.Lease(
        task=task_pb2.Task(
            name="projects/p/tasks/t", kind="k", input=to_value({"n": 2}), attempt=1
        ),
        lease_id="L",
    )
    ctx = TaskContext(lease, "w")
    assert ctx.input == {"n": 2} and ctx.attempt == 1
    ctx.set_summary("done")
    ctx.set_resume_token("next")
    done = ctx.completion({"ok": True})
    assert (done.name, done.lease_id, done.summary, done.resume_token) == (
        "projects/p/tasks/t",
        "L",
        "done",
        "next",
    )
    with pytest.raises(TypeError):
        ctx.completion(object())

    try:
        raise ValueError("boom")
    except ValueError as error:
        failure = ctx.failure_from(error)
    assert failure.retryable and failure.error.type == "ValueError"
    assert "boom" in failure.error.details.fields["traceback"].string_value
    assert not ctx.failure_from(PermanentError("no")).retryable

    ctx.report_progress({"step": 1})
    assert ctx.take_progress() is not None and ctx.take_progress() is None
    ctx.raise_if_cancelled()
    ctx.cancelled.set()
    with pytest.raises(TaskCancelled):
        ctx.raise_if_cancelled()
    cancelled = ctx.failure_from(TaskCancelled("x"))
    assert (cancelled.error.type, cancelled.retryable) == ("Cancelled", False)


def test_registry_refuses_a_second_handler_for_a_kind() -> None:
    registry = Registry()

    @registry.task("k")
    def first(ctx: TaskContext) -> None:
        return None

    registry.task("k")(first)  # the same function again (a re-import) is fine
    with pytest.raises(ValueError, match="already has a handler"):

        @registry.task("k")
        def second(ctx: TaskContext) -> None:
            return None

    assert registry.kinds() == ["k"]
