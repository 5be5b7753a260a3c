"""Integral numbers render as integers wherever JSON comes from a Struct or Value.

Struct numbers are doubles on the wire; json_format writes them as `5.0`. The rule
lives in conveyor.client._json, and REST answers, stored results, command results and
the CLI all go through it. Command results also carry typed counts.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import pytest
from google.protobuf import struct_pb2

from conveyor.client._json import from_value, integral, message_to_json
from conveyor.client.cli._output import to_data
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, task_pb2

API = "/v1/projects/default"


def test_the_rule() -> None:
    value = struct_pb2.Value()
    value.list_value.values.add().number_value = 1
    value.list_value.values.add().number_value = 2.5
    value.list_value.values.add().number_value = 2**53
    value.list_value.values.add().number_value = 2.0**60
    plain = from_value(value)
    assert plain == [1, 2.5, 2**53, 2.0**60]
    assert [type(x) for x in plain] == [int, float, int, float]
    assert json.dumps(integral({"a": [0.0, -3.0, 1e-3]})) == '{"a": [0, -3, 0.001]}'


def test_messages_and_the_cli_print_integers() -> None:
    task = task_pb2.Task(kind="k")
    task.input.struct_value.update({"ids": [1, 2], "max": 5000})
    expected = '{"ids": [1, 2], "max": 5000}'
    assert json.dumps(message_to_json(task)["input"], sort_keys=True) == expected
    assert json.dumps(to_data(task)["input"], sort_keys=True) == expected


@pytest.fixture
async def http(server: ConveyorServer, admin_key: str) -> Any:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"authorization": f"Bearer {admin_key}"},
        timeout=10,
    ) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


async def test_rest_inputs_results_and_stored_results_are_integral(
    http: httpx.AsyncClient, database_url: str
) -> None:
    created = ok(
        await http.post(f"{API}/tasks", json={"kind": "k", "queue": "nums", "input": {"max": 5000}})
    )
    got = await http.get(f"/v1/{created['name']}")
    assert '"input":{"max":5000}' in got.text
    leased = ok(
        await http.post(
            f"{API}/tasks:lease", json={"worker": "w1", "queues": ["nums"], "max_tasks": 1}
        )
    )
    lease = leased["leases"][0]
    done = await http.post(
        f"/v1/{created['name']}:complete",
        json={"lease_id": lease["lease_id"], "result": [1, 2, {"n": 3}]},
    )
    assert done.status_code == 200, done.text
    assert '"result":[1,2,{"n":3}]' in done.text
    got = await http.get(f"/v1/{created['name']}")
    assert '"result":[1,2,{"n":3}]' in got.text
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (
            await conn.execute("SELECT result::text FROM tasks WHERE result IS NOT NULL")
        ).fetchone()
    assert row is not None
    assert row[0] == '[1, 2, {"n": 3}]'


async def test_command_results_are_integral_and_typed(http: httpx.AsyncClient) -> None:
    ok(await http.post(f"{API}/tasks", json={"kind": "k", "queue": "gone"}))
    purge = await http.post(f"{API}/commands:purgeQueue", json={"queue": "gone", "force": True})
    assert purge.status_code == 200, purge.text
    assert '"result":{"purged":1}' in purge.text
    assert purge.json()["purged_count"] == 1
    retry = await http.post(
        f"{API}/commands:batchRetry",
        json={"filter": {"states": ["TASK_STATE_FAILED"]}, "max": 10},
    )
    assert retry.status_code == 200, retry.text
    body = retry.json()
    assert '"max":10' in retry.text
    assert body["retried_count"] == 0 and body["skipped_count"] == 0


def test_typed_counts_are_in_the_contract() -> None:
    fields = command_pb2.Command.DESCRIPTOR.fields_by_name
    for name in ("purged_count", "retried_count", "skipped_count"):
        assert fields[name].type == fields[name].TYPE_INT32
    assert enums_pb2.COMMAND_VERB_PURGE_QUEUE
