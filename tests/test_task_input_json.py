"""compact_json: orjson's speed with json's text rules; request_hash without a copy."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import struct_pb2

from conveyor.server.domain.request_ids import request_hash
from conveyor.server.domain.task_input import compact_json, json_text
from conveyor.server.errors import Violations
from conveyor.v1 import task_pb2, task_service_pb2


@pytest.mark.parametrize(
    "plain",
    [
        {"i": 5},
        {"a": 'é \u2028 " \\ \n \x00', "b": [1, 2.5, True, None], "c": {}},
        {"nullable": "null", "n": None},
        {"big": 2**70, "neg": -(2**64)},
        [1e300, -0.0, 0.1],
        "text",
        7,
    ],
)
def test_the_text_is_jsons(plain: object) -> None:
    text = compact_json(plain)
    assert json.loads(text) == plain
    assert text == json.dumps(plain, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(number: float) -> None:
    """orjson would write null for them; the JSON of an input never holds them."""
    with pytest.raises(ValueError):
        compact_json({"x": [number]})
    value = struct_pb2.Value()
    value.struct_value.fields["x"].number_value = number
    v = Violations()
    assert json_text(v, value, "task.input", 1000) is None
    assert [(item.field, item.description) for item in v.items] == [
        ("task.input", "numbers must be finite")
    ]


def test_a_request_hashes_alike_with_and_without_its_request_id() -> None:
    """request_hash skips the copy when there is no request_id to clear; same hash."""
    task = task_pb2.Task(kind="k", labels={"b": "2", "a": "1"})
    task.input.struct_value.fields["x"].number_value = 1
    bare = task_service_pb2.CreateTaskRequest(parent="projects/p", task=task)
    given = task_service_pb2.CreateTaskRequest(parent="projects/p", task=task, request_id="r")
    assert request_hash(bare) == request_hash(given)
    assert given.request_id == "r"  # the caller's message is left alone
