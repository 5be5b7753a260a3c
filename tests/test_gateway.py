"""The REST gateway against a live server: the curl tour, problem+json for each error class."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio

from conveyor.client import AsyncClient, UnimplementedError
from conveyor.server.app import ConveyorServer, ServerHooks
from conveyor.server.context import AppContext
from conveyor.server.registry import Services
from conveyor.server.rpc import unimplemented
from conveyor.server.settings import Settings
from conveyor.v1 import command_pb2

PROBLEM = "application/problem+json"


@pytest_asyncio.fixture
async def http(server: ConveyorServer, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the server's REST port, authenticated as the system admin."""
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    ) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://conveyor.dev/problems/{code.replace('_', '-')}"
    assert body["title"]
    assert body["instance"] == response.request.url.raw_path.decode().split("?")[0]
    assert isinstance(body["errors"], list)
    assert isinstance(body["allowed_actions"], list)
    return body


async def make_key(http: httpx.AsyncClient, project: str, role: str) -> str:
    response = await http.post(f"/v1/projects/{project}/apiKeys", json={"role": role})
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


async def test_project_tour(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/v1/projects",
        params={"project_id": "acme"},
        json={"displayName": "Acme", "labels": {"team": "infra"}},
    )
    assert created.status_code == 200, created.text
    assert created.headers["content-type"] == "application/json"
    project = created.json()
    assert project["name"] == "projects/acme"
    assert project["display_name"] == "Acme"
    assert project["labels"] == {"team": "infra"}
    # Fields without presence are always printed, with proto (snake_case) names.
    assert project["callback_url"] == ""
    assert project["create_time"].endswith("Z")

    got = await http.get("/v1/projects/acme")
    assert got.json() == project

    listed = await http.get("/v1/projects", params={"page_size": 1})
    assert listed.status_code == 200
    page = listed.json()
    assert [p["name"] for p in page["projects"]] == ["projects/acme"]
    assert page["next_page_token"]
    rest = await http.get(
        "/v1/projects", params={"pageSize": 5, "pageToken": page["next_page_token"]}
    )
    assert [p["name"] for p in rest.json()["projects"]] == ["projects/default"]

    updated = await http.patch(
        "/v1/projects/acme",
        params={"update_mask": "display_name"},
        json={"display_name": "ACME", "callback_url": "https://ignored.example.com"},
    )
    assert updated.status_code == 200, updated.text
    assert (updated.json()["display_name"], updated.json()["callback_url"]) == ("ACME", "")

    key = await http.post("/v1/projects/acme/apiKeys", json={"role": "ROLE_VIEWER"})
    assert key.json()["secret"].startswith("cvk_")
    keys = await http.get("/v1/projects/acme/apiKeys")
    assert [k["name"] for k in keys.json()["api_keys"]] == [key.json()["name"]]
    deleted = await http.delete(f"/v1/{key.json()['name']}")
    assert (deleted.status_code, deleted.json()) == (200, {})

    secret = await http.get("/v1/projects/acme/webhookSecret")
    rotated = await http.post("/v1/projects/acme/webhookSecret:rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["previous_secret"] == secret.json()["secret"]


async def test_request_id_is_forwarded_and_echoed(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/projects/default", headers={"X-Request-Id": "req-123"})
    assert response.headers["x-request-id"] == "req-123"
    generated = await http.get("/v1/projects/default")
    assert len(generated.headers["x-request-id"]) == 32


async def test_invalid_argument_lists_every_bad_field(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/projects", params={"project_id": "Bad_Id"}, json={"callback_url": "ftp://x"}
    )
    body = assert_problem(response, 400, "invalid_argument")
    fields = {e["field"] for e in body["errors"]}  # type: ignore[attr-defined]
    assert {"project_id", "project.callback_url"} <= fields
    assert body["detail"]


async def test_bad_json_is_refused_before_forwarding(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/projects",
        params={"project_id": "acme"},
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    body = assert_problem(response, 400, "invalid_argument")
    assert "not valid JSON" in str(body["detail"])
    assert body["errors"] == [{"field": "body", "description": body["errors"][0]["description"]}]  # type: ignore[index]

    unknown = await http.post("/v1/projects", params={"project_id": "acme"}, json={"nope": 1})
    body = assert_problem(unknown, 400, "invalid_argument")
    assert "nope" in str(body["detail"])
    assert (await http.get("/v1/projects/acme")).status_code == 404


async def test_bad_query_parameters_are_named(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/projects", params={"page_size": "many", "colour": "red"})
    body = assert_problem(response, 400, "invalid_argument")
    assert [e["field"] for e in body["errors"]] == ["page_size", "colour"]  # type: ignore[attr-defined]
    assert "not an integer" in str(body["detail"])


async def test_unauthenticated_is_401_with_a_challenge(server: ConveyorServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url) as anonymous:
        response = await anonymous.get("/v1/projects/default")
        bad = await anonymous.get(
            "/v1/projects/default", headers={"Authorization": "Bearer cvk_nope_nope"}
        )
    assert_problem(response, 401, "api_key_missing")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem(bad, 401, "api_key_invalid")


async def test_permission_denied_is_403(http: httpx.AsyncClient) -> None:
    await http.post("/v1/projects", params={"project_id": "alpha"}, json={})
    viewer = await make_key(http, "alpha", "ROLE_VIEWER")
    response = await http.post(
        "/v1/projects/alpha/apiKeys",
        json={"role": "ROLE_ADMIN"},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert_problem(response, 403, "role_insufficient")
    other = await http.get("/v1/projects/default", headers={"Authorization": f"Bearer {viewer}"})
    assert_problem(other, 403, "project_denied")


async def test_not_found_and_conflict(http: httpx.AsyncClient) -> None:
    assert_problem(await http.get("/v1/projects/nope"), 404, "not_found")
    first = await http.post("/v1/projects", params={"project_id": "acme"}, json={})
    assert first.status_code == 200
    again = await http.post("/v1/projects", params={"project_id": "acme"}, json={})
    assert_problem(again, 409, "already_exists")


@pytest_asyncio.fixture
async def unbuilt_server(server_settings: Settings) -> AsyncIterator[ConveyorServer]:
    """The whole application, except that CommandService is served by the UNIMPLEMENTED
    handler (as a method not built yet would be), so the 501 path has a method to take."""
    services = Services()
    commands = command_pb2.DESCRIPTOR.services_by_name["CommandService"]

    def register(grpc_server: grpc.aio.Server, ctx: AppContext) -> list[str]:
        # Added first, so it answers CommandService before the registry's handlers.
        grpc_server.add_generic_rpc_handlers((unimplemented.generic_handler(commands),))
        return services.register(grpc_server, ctx)

    hooks = ServerHooks(register, services.bootstrap, services.interceptors())
    running = ConveyorServer(server_settings, hooks)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_unimplemented_is_501_naming_the_method(unbuilt_server: ConveyorServer) -> None:
    key = (unbuilt_server.data_dir / "admin.key").read_text().strip()
    async with httpx.AsyncClient(
        base_url=unbuilt_server.http_base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ) as http:
        response = await http.get("/v1/projects/default/commands")
    body = assert_problem(response, 501, "not_implemented")
    assert body["metadata"] == {"method": "conveyor.v1.CommandService.ListCommands"}
    async with AsyncClient(unbuilt_server.grpc_target, api_key=key) as client:
        with pytest.raises(UnimplementedError) as caught:
            await client.commands.ListCommands(
                command_pb2.ListCommandsRequest(parent="projects/default")
            )
    assert caught.value.reason == "NOT_IMPLEMENTED"
    assert caught.value.metadata["method"] == "conveyor.v1.CommandService.ListCommands"


async def test_unknown_paths_are_404_and_wrong_methods_405(http: httpx.AsyncClient) -> None:
    assert_problem(await http.get("/v1/nothing/here"), 404, "no_route")
    assert_problem(await http.get("/v1/projects/default:frobnicate"), 404, "no_route")
    wrong = await http.put("/v1/projects/default")
    assert_problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET, PATCH"


async def test_deadline_header(http: httpx.AsyncClient) -> None:
    fine = await http.get("/v1/projects/default", headers={"X-Request-Timeout": "5"})
    assert fine.status_code == 200
    bad = await http.get("/v1/projects/default", headers={"X-Request-Timeout": "soon"})
    assert_problem(bad, 400, "invalid_argument")


async def test_task_tour(http: httpx.AsyncClient) -> None:
    """The README's curl tour: create, list with filters, get, cancel."""
    created = []
    for kind, priority, labels in [
        ("email.send", 3, {"env": "prod"}),
        ("email.send", 5, {"env": "dev"}),
        ("report.build", 1, {"env": "prod"}),
    ]:
        response = await http.post(
            "/v1/projects/default/tasks",
            params={"request_id": f"tour-{kind}-{priority}"},
            json={
                "kind": kind,
                "input": {"to": "a@example.com"},
                "priority": priority,
                "labels": labels,
                "queue": "mail" if kind == "email.send" else "default",
            },
        )
        assert response.status_code == 200, response.text
        created.append(response.json())
    task = created[0]
    assert task["name"].startswith("projects/default/tasks/")
    assert task["state"] == "TASK_STATE_QUEUED"
    assert task["input"] == {"to": "a@example.com"}
    assert task["attempts"] == []

    listed = await http.get(
        "/v1/projects/default/tasks",
        params=[
            ("filter.states", "QUEUED"),
            ("filter.queues", "mail"),
            ("filter.labels[env]", "prod"),
            ("order_by", "priority"),
        ],
    )
    assert listed.status_code == 200, listed.text
    assert [t["name"] for t in listed.json()["tasks"]] == [task["name"]]
    by_kind = await http.get(
        "/v1/projects/default/tasks",
        params=[("filter.kinds", "email.send"), ("filter.kinds", "report.build"), ("page_size", 2)],
    )
    page = by_kind.json()
    assert len(page["tasks"]) == 2 and page["next_page_token"]

    got = await http.get(f"/v1/{task['name']}")
    assert got.status_code == 200
    assert got.json()["name"] == task["name"]

    cancelled = await http.post(f"/v1/{task['name']}:cancel", json={"reason": "tour over"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "TASK_STATE_CANCELLED"
    assert cancelled.json()["state_reason"] == "tour over"

    again = await http.post(f"/v1/{task['name']}:cancel", json={})
    body = assert_problem(again, 412, "task_state_conflict")
    assert body["allowed_actions"] == [
        {
            "rel": "refresh",
            "method": "GET",
            "href": f"/v1/{task['name']}",
            "operation_id": "TaskService_GetTask",
            "hint": body["allowed_actions"][0]["hint"],  # type: ignore[index]
        }
    ]

    missing = await http.get("/v1/projects/default/tasks/0190e8a0-0000-7000-8000-000000000000")
    assert_problem(missing, 404, "not_found")
    bad = await http.post("/v1/projects/default/tasks", json={"kind": "", "priority": 12})
    body = assert_problem(bad, 400, "invalid_argument")
    assert {"task.kind", "task.priority"} <= {e["field"] for e in body["errors"]}  # type: ignore[attr-defined]


async def test_a_stale_lease_suggests_leasing_again(http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/projects/default/tasks", json={"kind": "k"})
    name = created.json()["name"]
    response = await http.post(
        f"/v1/{name}:complete",
        json={"lease_id": "0190e8a0-0000-7000-8000-000000000001", "result": {"ok": True}},
    )
    body = assert_problem(response, 412, "lease_stale")
    assert body["preconditions"][0]["type"] == "LEASE"  # type: ignore[index]
    actions = body["allowed_actions"]
    assert isinstance(actions, list)
    [action] = actions
    assert action["rel"] == "lease"
    assert (action["method"], action["href"]) == ("POST", "/v1/projects/default/tasks:lease")
    assert action["operation_id"] == "WorkerService_LeaseTasks"


async def test_the_gateway_target_setting_points_rest_elsewhere(
    server_settings: Settings, tmp_path: Path
) -> None:
    assert Settings.from_env({"CONVEYOR_GATEWAY_TARGET": "grpc.internal:50051"}).gateway_target == (
        "grpc.internal:50051"
    )
    assert Settings.from_env({"CONVEYOR_GATEWAY_TARGET": ""}).gateway_target is None
    # Nothing listens on port 1: REST answers 503 instead of reaching this process.
    settings = server_settings.replace(gateway_target="127.0.0.1:1", data_dir=tmp_path / "other")
    other = ConveyorServer(settings)
    await other.start()
    try:
        async with httpx.AsyncClient(base_url=other.http_base_url, timeout=10) as http:
            response = await http.get("/v1/projects/default")
    finally:
        await other.stop()
    assert_problem(response, 503, "unavailable")


async def read_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    """The first `count` SSE events (blocks with data) of a stream."""
    found: list[dict[str, str]] = []
    block: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in block:
                found.append(block)
                if len(found) == count:
                    break
            block = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            block[key] = value
    return found


async def test_watch_with_sse_and_resume(http: httpx.AsyncClient) -> None:
    """The tour's watch: live events over SSE, then a reconnect with Last-Event-ID."""
    sse = {"Accept": "text/event-stream"}
    params = {"filter.types": "task.created"}
    watch = "/v1/projects/default/events:watch"
    async with http.stream("GET", watch, params=params, headers=sse) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first = await http.post("/v1/projects/default/tasks", json={"kind": "tour.one"})
        [event] = await read_events(response, 1)
    assert event["event"] == "task.created"
    data = json.loads(event["data"])
    assert data["subject"] == first.json()["name"]
    assert data["id"] == event["id"]

    # Created while nobody watched: a reconnect from the last id replays it.
    second = await http.post("/v1/projects/default/tasks", json={"kind": "tour.two"})
    resumed = {**sse, "Last-Event-ID": event["id"]}
    async with http.stream("GET", watch, params=params, headers=resumed) as response:
        [replayed] = await read_events(response, 1)
    assert json.loads(replayed["data"])["subject"] == second.json()["name"]
    assert int(replayed["id"]) > int(event["id"])
