"""Create requests for the tests of the created-task renderers (test_render_created*.py):
one that sets every option a create can set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2

from conveyor.v1 import enums_pb2, task_pb2


def full_task() -> task_pb2.Task:
    """A create with every option set, a non-ASCII list input and a future schedule."""
    full = task_pb2.Task(
        kind="other",
        queue="full",
        priority=2,
        labels={"team": "x"},
        retry_policy=task_pb2.RetryPolicy(max_attempts=7, backoff=enums_pb2.BACKOFF_FIXED),
        lease_duration=duration_pb2.Duration(seconds=90),
        execution_timeout=duration_pb2.Duration(seconds=600),
        concurrency_key="ck",
        concurrency_limit=3,
        requires_approval=True,
        approval_timeout=duration_pb2.Duration(seconds=3600),
        approval_timeout_action=enums_pb2.APPROVAL_ACTION_APPROVE,
        correlation_id="corr",
        callback_url="https://example.com/hook",
        resume_token="resume",
    )
    full.input.list_value.values.add().string_value = "é"
    full.schedule_time.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return full
