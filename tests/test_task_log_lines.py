"""Task log lines as the append reads them (#19 point 2): parse_append writes each line's
JSON object itself, and what it writes must be what json.dumps of the line would be,
for any text, fields and time; the checks still name every bad field."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from test_task_logs import _append, _leased, _list  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.client._task_logs import log_line
from conveyor.server.app import ConveyorServer
from conveyor.server.domain.task_logs import parse_append
from conveyor.server.errors import InvalidArgument
from conveyor.v1 import enums_pb2, queue_pb2, task_service_pb2

S = enums_pb2
Line = task_service_pb2.TaskLogLine
NAME = "projects/alpha/tasks/0190b6a0-0000-7000-8000-000000000001"
LEASE = "0190b6a0-0000-7000-8000-000000000002"
TEXT = 'say "hi" \\ back\tslash \u00fc \U0001f600 </script> \u2028'


def _request(*lines: Line) -> task_service_pb2.AppendTaskLogsRequest:
    return task_service_pb2.AppendTaskLogsRequest(name=NAME, lease_id=LEASE, lines=lines)


def _fields(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


def test_lines_are_the_json_of_each_line() -> None:
    nested: dict[str, Any] = {
        "n": 3,
        "x": 1.5,
        "none": None,
        "ok": True,
        "list": [1, "two", {"k": TEXT}],
        "big": 1e300,
        "neg": -2.5,
        "empty": {},
        "nothing": [],
        "deep": {"a": {TEXT: [None, False, 2.0**60]}},
    }
    timed = Line(message=TEXT, fields=_fields(nested), level=S.TASK_LOG_LEVEL_ERROR)
    timed.time.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    whole = Line(message="", stream=S.TASK_LOG_STREAM_STDERR)
    whole.time.FromDatetime(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC))
    plain = Line(message="plain")
    parsed = parse_append(_request(timed, whole, plain))
    fields_size = len(json.dumps(nested, separators=(",", ":")).encode())
    assert json.loads(parsed.lines_json) == [
        {
            "message": TEXT,
            "fields": nested,
            "size": len(TEXT.encode()) + fields_size,
            "time": "2026-01-02T03:04:05.678901+00:00",
            "level": "ERROR",
        },
        {"message": "", "size": 0, "time": "1969-12-31T23:59:59.000000+00:00", "stream": "STDERR"},
        {"message": "plain", "size": 5},
    ]


def test_bad_lines_name_every_field() -> None:
    with pytest.raises(InvalidArgument) as bad:
        parse_append(
            _request(
                Line(message="ok"),
                Line(message="nul\x00"),
                Line(message="f", fields=_fields({"x": "a\x00b"})),
                Line(message="n", fields=_fields({"x": float("nan")})),
                Line(message="s", stream=42),  # type: ignore[arg-type]
                Line(message="l", level=42),  # type: ignore[arg-type]
                Line(message="x" * (64 * 1024 + 1)),
            )
        )
    assert sorted(v.field for v in bad.value.violations) == [
        "lines[1].message",
        "lines[2].fields",
        "lines[3].fields",
        "lines[4].stream",
        "lines[5].level",
        "lines[6].message",
    ]


async def test_any_text_comes_back_as_written(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        lease = await _leased(ops, w, "log-text")
        fields = _fields({"text": TEXT, "quote": '"', "list": [TEXT, 2]})
        await _append(w, lease, [Line(message=TEXT, fields=fields), Line(message="\\")])
        first, second = await _list(ops, lease.task.name)
        assert first.message == TEXT and first.fields == fields
        assert second.message == "\\"


async def test_the_attempt_counts_what_it_keeps(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    """Past the line bound and past the bytes bound, the attempt's counters stay those
    of the lines kept (the next bound is judged by them)."""
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        for queue, bounds in (
            ("few-lines", queue_pb2.Queue(max_log_lines=4)),
            ("few-bytes", queue_pb2.Queue(max_log_bytes=1024)),
        ):
            bounds.name = f"projects/alpha/queues/{queue}"
            paths = [f.name for f, _ in bounds.ListFields() if f.name != "name"]
            await ops.queues.UpdateQueue(
                queue_pb2.UpdateQueueRequest(
                    queue=bounds, update_mask=field_mask_pb2.FieldMask(paths=paths)
                )
            )
            lease = await _leased(ops, w, queue)
            for i in range(6):
                await _append(
                    w, lease, [Line(message=str(i) * (100 + 50 * i)) for _ in range(i % 3 + 1)]
                )
            kept = await _list(ops, lease.task.name)
            async with server.context.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT log_seq, log_dropped, log_bytes FROM task_attempts"
                    " WHERE project = 'alpha' AND task_id = %s::uuid AND attempt = 1",
                    (lease.task.name.rsplit("/", 1)[1],),
                )
                counters = await cur.fetchone()
            assert counters == (
                kept[-1].seq,
                kept[0].seq - 1,
                sum(len(x.message) for x in kept),
            )
            assert kept[0].dropped_count == kept[0].seq - 1 > 0


def test_the_sdk_line_keeps_what_it_can() -> None:
    before = time.time()
    line = log_line("hi", fields={"ok": 1, "bad": {1}})
    assert dict(line.fields) == {"ok": "1", "bad": "{1}"}  # not JSON: all as text
    assert before - 1 <= line.time.ToDatetime(tzinfo=UTC).timestamp() <= time.time() + 1
    big = log_line("hi", fields={"n": 1, "text": "x" * (40 * 1024)})
    assert dict(big.fields) == {"fields_dropped": "over 32768 bytes"}
    assert dict(log_line("hi", fields={"n": 2, "v": [True]}).fields) == {"n": 2, "v": [True]}
