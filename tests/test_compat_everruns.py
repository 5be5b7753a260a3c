"""Seed 002, Everruns: the documented curl runs verbatim; every JSON shape of `input`;
priorities; errors in the seed's problem shape; the same rows and audit as v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from compat_support import assert_seed_problem, curl_examples, run_curl, seed_text  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.server.compat.everruns import priority
from conveyor.server.domain.anonymous_keys import ensure_anonymous_key
from conveyor.server.settings import Settings

TEXT = seed_text("002")


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    # The seed's example sends no key: keyless loopback requests act as an operator.
    return server_settings.replace(compat_anonymous="operator")


@pytest_asyncio.fixture
async def http(server: ConveyorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as client:
        yield client


async def get_task(server: ConveyorServer, admin_key: str, task_id: str) -> Any:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        return await client.get_task(f"projects/default/tasks/{task_id}")


async def test_the_documented_curl_enqueues_a_task(server: ConveyorServer, admin_key: str) -> None:
    [example] = curl_examples(TEXT)
    result = await run_curl(example, server.http_base_url)
    assert result.status == 201
    assert result.headers["content-type"] == "application/json"
    body = result.json()
    assert list(body) == ["task_id"]
    task = await get_task(server, admin_key, body["task_id"])
    assert task.kind == "session.run"
    assert task.input.string_value == "example"
    assert task.retry_policy.max_attempts == 3
    assert task.priority == 1  # the seed's 10: most urgent (docs/compat/002-everruns.md)
    assert task.queue == "default"


@pytest.mark.parametrize(
    "value",
    [
        {"session_id": "session_01933b5a00007000800000000000001"},
        [1, "two", {"three": 3}],
        "example",
        42,
        2.5,
        True,
        False,
        {},
        [],
        "",
    ],
)
async def test_every_json_shape_of_input_is_kept(
    server: ConveyorServer, admin_key: str, http: httpx.AsyncClient, value: Any
) -> None:
    response = await http.post(
        "/api/v1/durable/tasks", json={"activity_type": "session.run", "input": value}
    )
    assert response.status_code == 201, response.text
    task = await get_task(server, admin_key, response.json()["task_id"])
    from google.protobuf import json_format

    assert json_format.MessageToDict(task.input) == value


async def test_null_or_missing_input_stores_none(
    server: ConveyorServer, admin_key: str, http: httpx.AsyncClient
) -> None:
    for body in ({"activity_type": "a", "input": None}, {"activity_type": "a"}):
        response = await http.post("/api/v1/durable/tasks", json=body)
        assert response.status_code == 201, response.text
        task = await get_task(server, admin_key, response.json()["task_id"])
        assert not task.HasField("input")


def test_priority_scale() -> None:
    assert [priority(p) for p in (100, 10, 5, 3, 0, -3, -10, -100)] == [1, 1, 3, 4, 5, 7, 9, 9]


async def test_a_too_long_activity_type_says_how_to_fix_it(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/durable/tasks", json={"activity_type": "x" * 201})
    body = assert_seed_problem(response, 400, "invalid_argument")
    assert body["errors"][0]["field"] == "activity_type"
    [action] = body["allowed_actions"]
    assert action == {
        "rel": "fix-and-retry",
        "method": "POST",
        "href": "/api/v1/durable/tasks",
        "operation_id": "enqueue_durable_task",
        "hint": "Shorten 'activity_type' to <= 200 chars.",
    }


async def test_wrong_json_types_are_refused_by_field(http: httpx.AsyncClient) -> None:
    cases = [
        ({"activity_type": 5}, "activity_type"),
        ({"activity_type": "a", "options": []}, "options"),
        ({"activity_type": "a", "options": {"priority": "high"}}, "options.priority"),
        ({"activity_type": "a", "options": {"max_attempts": 1.5}}, "options.max_attempts"),
    ]
    for body, field in cases:
        response = await http.post("/api/v1/durable/tasks", json=body)
        problem = assert_seed_problem(response, 400, "invalid_argument")
        assert problem["errors"][0]["field"] == field
    response = await http.post("/api/v1/durable/tasks", content=b"{not json")
    assert assert_seed_problem(response, 400, "invalid_argument")["errors"][0]["field"] == "body"


async def test_a_missing_activity_type_is_v1s_required_kind(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/durable/tasks", json={"input": 1})
    body = assert_seed_problem(response, 400, "invalid_argument")
    assert body["errors"] == [{"field": "activity_type", "description": "is required"}]
    assert body["allowed_actions"][0]["hint"] == "Set 'activity_type'; it is required."


async def test_other_methods_are_405_problems(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/durable/tasks")
    assert_seed_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_a_key_acts_in_its_own_project(
    server: ConveyorServer, keys: dict[str, str], admin_key: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as http:
        response = await http.post(
            "/api/v1/durable/tasks",
            json={"activity_type": "session.run"},
            headers={"Authorization": f"Bearer {keys['operator']}"},
        )
        assert response.status_code == 201, response.text
        task_id = response.json()["task_id"]
        async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
            task = await client.get_task(f"projects/alpha/tasks/{task_id}")
        assert task.kind == "session.run"
        # A viewer may not create: v1's authorisation answers, in the seed's shape.
        response = await http.post(
            "/api/v1/durable/tasks",
            json={"activity_type": "session.run"},
            headers={"Authorization": f"Bearer {keys['viewer']}"},
        )
        body = assert_seed_problem(response, 403, "role_insufficient")
        assert body["allowed_actions"][0]["rel"] == "authenticate"
        # The system key belongs to `default` (it sees every project).
        response = await http.post(
            "/api/v1/durable/tasks",
            json={"activity_type": "as.system"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert response.status_code == 201, response.text
        async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
            task = await client.get_task(f"projects/default/tasks/{response.json()['task_id']}")
        assert task.kind == "as.system"
        # A bad key is refused, never replaced by the anonymous one.
        response = await http.post(
            "/api/v1/durable/tasks",
            json={"activity_type": "session.run"},
            headers={"Authorization": "Bearer cvk_0000000000000000_nope"},
        )
        assert_seed_problem(response, 401, "api_key_invalid")


async def test_everruns_and_v1_leave_the_same_rows(
    server: ConveyorServer, admin_key: str, http: httpx.AsyncClient
) -> None:
    seed = await http.post(
        "/api/v1/durable/tasks",
        json={"activity_type": "session.run", "input": {"a": 1}, "options": {"max_attempts": 3}},
    )
    assert seed.status_code == 201, seed.text
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    ) as admin:
        keys = (await admin.get("/v1/projects/default/apiKeys")).json()["api_keys"]
        [anonymous] = [k for k in keys if k["display_name"] == "compat anonymous (operator)"]
        token = await ensure_anonymous_key(
            server.context.pool, server.context.server_key, "operator"
        )
        v1 = await http.post(
            "/v1/projects/default/tasks",
            json={"kind": "session.run", "input": {"a": 1}, "retry_policy": {"max_attempts": 3}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert v1.status_code == 200, v1.text

        async def row(task_id: str) -> dict[str, Any]:
            task = (await admin.get(f"/v1/projects/default/tasks/{task_id}")).json()
            for varying in ("name", "root_task", "create_time", "schedule_time", "update_time"):
                task.pop(varying, None)
            return dict(task)

        seed_row = await row(seed.json()["task_id"])
        assert seed_row == await row(v1.json()["name"].rsplit("/", 1)[-1])
        assert seed_row["creator"] == anonymous["name"]
        # Creating a task is not a command (DESIGN.md section 3): neither made one.
        commands = (await admin.get("/v1/projects/default/commands")).json()["commands"]
        assert [c for c in commands if "/tasks/" in c["target"]] == []


async def test_a_rate_limit_says_when_to_retry(
    server: ConveyorServer, keys: dict[str, str], http: httpx.AsyncClient
) -> None:
    made = await http.post(
        "/v1/projects/alpha/apiKeys",
        json={
            "role": "operator",
            "rate_limits": {"write": {"requests_per_second": 0.01, "burst": 1}},
        },
        headers={"Authorization": f"Bearer {keys['admin']}"},
    )
    assert made.status_code == 200, made.text
    limited = {"Authorization": f"Bearer {made.json()['secret']}"}
    body = {"activity_type": "session.run"}
    first = await http.post("/api/v1/durable/tasks", json=body, headers=limited)
    assert first.status_code == 201, first.text
    second = await http.post("/api/v1/durable/tasks", json=body, headers=limited)
    problem = assert_seed_problem(second, 429, "request_limited")
    assert problem["retry_after_seconds"] > 0
    assert int(second.headers["retry-after"]) >= 1
    [action] = problem["allowed_actions"]
    assert action["rel"] == "retry-later"
    assert action["href"] == "/api/v1/durable/tasks"
    assert action["operation_id"] == "enqueue_durable_task"
    assert "Retry the same request after" in action["hint"]
