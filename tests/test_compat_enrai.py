"""Seed 000, Enrai: the documented curl examples verbatim; the sequential run; cancel of
a queued task; callbacks on all three terminal states, signed; the `task_queue` SSE
event; the same rows and audit entries as through v1."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from compat_support import (  # type: ignore[import-not-found]
    assert_seed_problem,
    curl_examples,
    run_curl,
    seed_text,
)
from test_webhooks import Receiver, receiver  # type: ignore[import-not-found]  # noqa: F401

from conveyor.client import AsyncClient, PermanentError, TaskContext, Worker
from conveyor.client.webhooks import verify
from conveyor.server.app import ConveyorServer
from conveyor.server.settings import Settings
from conveyor.v1 import enums_pb2

S = enums_pb2
TEXT = seed_text("000")
ROLLOUT = "rollout-2026-03-18T20-28-17-019d03b5-2ac6-77a3-91d9-97c1c18d5f2d.jsonl"
TASK_FIELDS = {
    "id",
    "status",
    "text",
    "summary",
    "resume_path",
    "workdir",
    "rollout",
    "callback_url",
    "instructions",
    "manifest",
    "created_at",
    "started_at",
    "finished_at",
    "error",
}


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    # The seed's examples send no key: keyless loopback requests act as an operator.
    return server_settings.replace(compat_anonymous="operator", webhook_allow=("127.0.0.1/32",))


@pytest_asyncio.fixture
async def http(server: ConveyorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as client:
        yield client


@pytest_asyncio.fixture
async def admin_http(server: ConveyorServer, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    ) as client:
        yield client


async def test_the_documented_curl_examples_run_verbatim(
    server: ConveyorServer, admin_http: httpx.AsyncClient
) -> None:
    resume, fresh, listing, cancel = curl_examples(TEXT)

    result = await run_curl(resume, server.http_base_url)
    assert result.status == 200, result.body
    first = result.json()
    assert set(first) == TASK_FIELDS
    assert first["status"] == "queued"
    assert first["text"] == "Continue the auth refactor and run tests"
    assert (first["rollout"], first["resume_path"]) == (ROLLOUT, ROLLOUT)
    assert first["workdir"] is None and first["callback_url"] is None
    assert first["summary"] == first["text"]  # until the worker reports its own
    assert first["created_at"].endswith("Z") and first["started_at"] is None

    result = await run_curl(fresh, server.http_base_url)
    assert result.status == 200, result.body
    second = result.json()
    assert second["status"] == "queued"
    assert second["resume_path"] is None and second["rollout"] is None  # a fresh session
    assert second["workdir"] == "./backend/projects/demo"
    assert second["callback_url"] == "https://automation.example.com/enrai/task-finished"

    result = await run_curl(listing, server.http_base_url)
    assert result.status == 200
    state = result.json()
    assert list(state) == ["active", "queued", "completed"]
    assert state["active"] is None
    assert [t["id"] for t in state["queued"]] == [first["id"], second["id"]]
    assert state["queued"][0] == first
    assert state["completed"] == []

    assert (first["id"], second["id"]) == ("task-1", "task-2")
    # Before a third task, task-3 is no task: the seed's problem shape, 404.
    result = await run_curl(cancel, server.http_base_url)
    problem = assert_seed_problem(result, 404, "not_found")
    assert problem["instance"] == "/api/enrai/tasks/task-3"
    assert problem["allowed_actions"] == [
        {
            "rel": "list",
            "method": "GET",
            "href": "/api/enrai/tasks",
            "operation_id": "list_tasks",
            "hint": "List the queue (active, queued, completed) to find the task's id.",
        }
    ]
    # The third task enqueued is task-3, and the seed's DELETE cancels it, verbatim.
    result = await run_curl(resume, server.http_base_url)
    third = result.json()
    assert third["id"] == "task-3"
    result = await run_curl(cancel, server.http_base_url)
    assert result.status == 200, result.body
    assert (result.json()["id"], result.json()["status"]) == ("task-3", "interrupted")
    state = (await run_curl(listing, server.http_base_url)).json()
    assert [t["id"] for t in state["queued"]] == ["task-1", "task-2"]
    assert [(t["id"], t["status"]) for t in state["completed"]] == [("task-3", "interrupted")]

    # The v1 task behind the first example.
    task = await v1_task(admin_http, first["id"])
    assert (task["kind"], task["queue"], task["labels"]) == (
        "enrai.task",
        "enrai",
        {"compat": "enrai", "enrai_id": "task-1"},
    )
    assert (task["concurrency_key"], task["concurrency_limit"]) == ("enrai", 1)
    assert task["resume_token"] == ROLLOUT
    assert task["input"] == {"text": "Continue the auth refactor and run tests", "rollout": ROLLOUT}


async def test_the_example_payload_is_accepted_whole(
    http: httpx.AsyncClient, admin_http: httpx.AsyncClient
) -> None:
    # The seed's "Example payload", as written there.
    start = TEXT.index("Example payload\n") + len("Example payload\n")
    payload = json.loads(TEXT[start : TEXT.index("\n}\n", start) + 2])
    response = await http.post("/api/enrai/tasks", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["instructions"] == "Keep the change small and avoid unrelated refactors."
    assert body["manifest"] == {"goal": "safe-change", "testing": "required"}
    task = await v1_task(admin_http, body["id"])
    assert task["input"]["manifest"] == payload["manifest"]
    assert task["callback_url"] == payload["callback_url"]


async def test_bad_bodies_are_refused_in_the_seed_shape(http: httpx.AsyncClient) -> None:
    for body, field in [
        ({}, "text"),
        ({"text": 3}, "text"),
        ({"text": "x", "workdir": 1}, "workdir"),
        ({"text": "x", "manifest": "m"}, "manifest"),
    ]:
        response = await http.post("/api/enrai/tasks", json=body)
        problem = assert_seed_problem(response, 400, "invalid_argument")
        assert problem["errors"][0]["field"] == field
        assert problem["allowed_actions"][0]["rel"] == "fix-and-retry"
        assert problem["allowed_actions"][0]["href"] == "/api/enrai/tasks"
    # v1's own rule, in Enrai's field name.
    response = await http.post("/api/enrai/tasks", json={"text": "x", "callback_url": "ftp://a"})
    problem = assert_seed_problem(response, 400, "invalid_argument")
    assert problem["errors"][0]["field"] == "callback_url"


async def test_cancel_of_a_queued_task(
    http: httpx.AsyncClient, admin_http: httpx.AsyncClient
) -> None:
    created = (await http.post("/api/enrai/tasks", json={"text": "later"})).json()
    assert created["id"] == "task-1"
    response = await http.delete(f"/api/enrai/tasks/{created['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "interrupted"
    state = (await http.get("/api/enrai/tasks")).json()
    assert state["queued"] == []
    assert [t["id"] for t in state["completed"]] == [created["id"]]
    # A task id that is no task: the same 404 as the seed's task-3 before there is one.
    for missing_id in ["01a25140-1c14-7016-b6ab-3cc30f30cb15", "task-2", "task-01", "task-x"]:
        missing = await http.delete(f"/api/enrai/tasks/{missing_id}")
        problem = assert_seed_problem(missing, 404, "not_found")
        assert [a["rel"] for a in problem["allowed_actions"]] == ["list"]
    # Cancelling it again is v1's conflict, with the next step.
    again = await http.delete(f"/api/enrai/tasks/{created['id']}")
    problem = assert_seed_problem(again, 412, "task_state_conflict")
    assert problem["allowed_actions"][0]["rel"] == "refresh"
    # The Conveyor id (what Enrai answered before its ids were numbered) still cancels.
    second = (await http.post("/api/enrai/tasks", json={"text": "also later"})).json()
    conveyor_id = (await v1_task(admin_http, second["id"]))["name"].rsplit("/", 1)[-1]
    response = await http.delete(f"/api/enrai/tasks/{conveyor_id}")
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["status"]) == ("task-2", "interrupted")
    # A v1 task outside the Enrai queue is not Enrai's, by either id.
    other = await admin_http.post(
        "/v1/projects/default/tasks", json={"kind": "k", "labels": {"enrai_id": "task-3"}}
    )
    assert other.status_code == 200, other.text
    for other_id in ["task-3", other.json()["name"].rsplit("/", 1)[-1]]:
        assert_seed_problem(await http.delete(f"/api/enrai/tasks/{other_id}"), 404, "not_found")


async def test_concurrent_enqueues_get_distinct_consecutive_ids(
    http: httpx.AsyncClient, replica: ConveyorServer
) -> None:
    # 20 POSTs at once, half of them through a second replica on the same database.
    async with httpx.AsyncClient(base_url=replica.http_base_url, timeout=10) as other:
        responses = await asyncio.gather(
            *(
                (http if i % 2 else other).post("/api/enrai/tasks", json={"text": f"t{i}"})
                for i in range(20)
            )
        )
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    ids = [r.json()["id"] for r in responses]
    assert sorted(ids, key=lambda i: int(i[5:])) == [f"task-{n}" for n in range(1, 21)]
    state = (await http.get("/api/enrai/tasks")).json()
    assert sorted(t["id"] for t in state["queued"]) == sorted(ids)
    # Each answer's id is its own task's: the text it was sent with.
    texts = {t["id"]: t["text"] for t in state["queued"]}
    assert {r.json()["id"]: r.json()["text"] for r in responses} == texts


async def test_the_next_id_follows_the_highest_existing_one(
    http: httpx.AsyncClient, admin_http: httpx.AsyncClient
) -> None:
    # An Enrai task numbered 41 that holds no dedupe key (made through v1): the next
    # number is read from the tasks, not only found by trying keys from 1.
    made = await admin_http.post(
        "/v1/projects/default/tasks",
        json={
            "kind": "enrai.task",
            "queue": "enrai",
            "labels": {"compat": "enrai", "enrai_id": "task-41"},
        },
    )
    assert made.status_code == 200, made.text
    created = (await http.post("/api/enrai/tasks", json={"text": "next"})).json()
    assert created["id"] == "task-42"


async def test_sequential_run_and_callbacks_on_every_terminal_state(
    server: ConveyorServer,
    http: httpx.AsyncClient,
    admin_http: httpx.AsyncClient,
    admin_key: str,
    receiver: Receiver,  # noqa: F811
) -> None:
    # The global "Task callback URL" is the project's callback_url.
    response = await admin_http.patch(
        "/v1/projects/default", json={"callback_url": receiver.url("/global")}
    )
    assert response.status_code == 200, response.text
    runs: list[tuple[str, float, float]] = []
    started_long = threading.Event()

    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        worker = Worker(client, queues=["enrai"], concurrency=4, lease_duration=1.5)

        @worker.task("enrai.task")
        def run(ctx: TaskContext) -> Any:
            began = time.monotonic()
            text = ctx.input["text"]
            try:
                if text == "fail":
                    raise PermanentError("tests failed")
                if text == "long":
                    started_long.set()
                    ctx.cancelled.wait(30)
                    ctx.raise_if_cancelled()
                time.sleep(0.05)
                ctx.set_summary(f"did {text}")
                ctx.set_resume_token(f"/sessions/{text}.jsonl")
                return None
            finally:
                runs.append((text, began, time.monotonic()))

        ids = []
        for text, extra in [
            ("one", {"callback_url": receiver.url("/per-request")}),
            ("two", {"workdir": "/workspace/demo"}),
            ("fail", {}),
        ]:
            response = await http.post("/api/enrai/tasks", json={"text": text, **extra})
            ids.append(response.json()["id"])
        assert ids == ["task-1", "task-2", "task-3"]
        task = asyncio.create_task(worker.arun())
        try:
            deliveries = await receiver.wait_for(3)
            long = (await http.post("/api/enrai/tasks", json={"text": "long"})).json()
            await asyncio.to_thread(started_long.wait, 10)
            state = (await http.get("/api/enrai/tasks")).json()
            assert state["active"]["id"] == long["id"]
            assert state["active"]["status"] == "running"
            response = await http.delete(f"/api/enrai/tasks/{long['id']}")
            assert response.status_code == 200, response.text
            deliveries = await receiver.wait_for(4)
        finally:
            await worker.stop(5)
            await task

    # One at a time, in the order they were enqueued, though the worker had 4 slots.
    assert [r[0] for r in runs] == ["one", "two", "fail", "long"]
    for before, after in itertools.pairwise(runs):
        assert before[2] <= after[1]

    secret = (await admin_http.get("/v1/projects/default/webhookSecret")).json()["secret"]
    bodies = {}
    for delivery in deliveries:
        verify(delivery.body, delivery.headers["Conveyor-Signature"], secret)
        body = json.loads(delivery.body)
        bodies[body["task"]["id"]] = (delivery.path, body)
    one_path, one = bodies[ids[0]]
    assert one_path == "/per-request"
    assert list(one) == ["event", "timestamp", "task"]
    assert one["event"] == "task.completed"
    assert one["timestamp"].endswith("Z") and len(one["timestamp"]) == len(
        "2026-03-19T18:42:10.000Z"
    )
    assert one["task"] == {
        "id": ids[0],
        "status": "completed",
        "summary": "did one",
        "resume_path": "/sessions/one.jsonl",
        "workdir": None,
    }
    two_path, two = bodies[ids[1]]
    assert two_path == "/global"
    assert two["task"]["workdir"] == "/workspace/demo"
    _, failed = bodies[ids[2]]
    assert (failed["event"], failed["task"]["status"]) == ("task.failed", "failed")
    _, interrupted = bodies[long["id"]]
    assert (interrupted["event"], interrupted["task"]["status"]) == (
        "task.interrupted",
        "interrupted",
    )
    state = (await http.get("/api/enrai/tasks")).json()
    assert [t["status"] for t in state["completed"]] == [
        "interrupted",
        "failed",
        "completed",
        "completed",
    ]
    assert state["completed"][1]["error"] == "tests failed"


@pytest.mark.parametrize("path", ["/api/enrai/events", "/api/enrai/tasks"])
async def test_queue_events_on_sse(http: httpx.AsyncClient, path: str) -> None:
    async with http.stream("GET", path, headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()

        async def next_event() -> tuple[str, Any]:
            name = ""
            async for line in lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    return name, json.loads(line[6:])
            raise AssertionError("the stream ended")

        name, state = await asyncio.wait_for(next_event(), 10)
        assert name == "task_queue"
        assert state == {"active": None, "queued": [], "completed": []}
        created = (await http.post("/api/enrai/tasks", json={"text": "watch me"})).json()
        assert created["id"] == "task-1"
        name, state = await asyncio.wait_for(next_event(), 10)
        assert name == "task_queue"
        assert [t["id"] for t in state["queued"]] == [created["id"]]
        await http.delete(f"/api/enrai/tasks/{created['id']}")
        name, state = await asyncio.wait_for(next_event(), 10)
        assert state["queued"] == []
        assert [t["status"] for t in state["completed"]] == ["interrupted"]


async def test_sse_without_access_is_a_problem(server: ConveyorServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as http:
        response = await http.get(
            "/api/enrai/events", headers={"Authorization": "Bearer cvk_0000000000000000_x"}
        )
    assert_seed_problem(response, 401, "api_key_invalid")


async def test_enrai_and_v1_leave_the_same_rows_and_audit(
    server: ConveyorServer, http: httpx.AsyncClient, admin_http: httpx.AsyncClient
) -> None:
    anonymous = await anonymous_key(admin_http)
    enrai = (
        await http.post("/api/enrai/tasks", json={"text": "same", "workdir": "/w", "rollout": "r"})
    ).json()
    enrai_uuid = (await v1_task(admin_http, enrai["id"]))["name"].rsplit("/", 1)[-1]
    # The same task through v1, as the same key would send it.
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {await anonymous_token(server)}"},
        timeout=10,
    ) as as_anonymous:
        v1 = await as_anonymous.post(
            "/v1/projects/default/tasks",
            json={
                "kind": "enrai.task",
                "queue": "enrai",
                # What Enrai sends for its next task, task-2.
                "labels": {"compat": "enrai", "enrai_id": "task-2"},
                "dedupe_policy": {
                    "key": "enrai:task-2",
                    "window": "2592000s",
                    "on_conflict": "ON_CONFLICT_REJECT",
                },
                "concurrency_key": "enrai",
                "concurrency_limit": 1,
                "resume_token": "r",
                "input": {"text": "same", "workdir": "/w", "rollout": "r"},
            },
        )
        assert v1.status_code == 200, v1.text
        v1_id = v1.json()["name"].rsplit("/", 1)[-1]
        assert (await http.delete(f"/api/enrai/tasks/{enrai['id']}")).status_code == 200
        cancelled = await as_anonymous.post(
            f"/v1/projects/default/tasks/{v1_id}:cancel", json={"reason": "cancelled through Enrai"}
        )
        assert cancelled.status_code == 200, cancelled.text

    async def row(task_id: str) -> dict[str, Any]:
        task = (await admin_http.get(f"/v1/projects/default/tasks/{task_id}")).json()
        varying = ("name", "root_task", "create_time", "schedule_time", "update_time", "end_time")
        for varying_field in varying:
            task.pop(varying_field, None)
        # The Enrai number differs (task-1, task-2), and nothing else.
        task["labels"].pop("enrai_id")
        return dict(task)

    assert await row(enrai_uuid) == await row(v1_id)
    assert (await row(enrai_uuid))["creator"] == anonymous
    commands = (await admin_http.get("/v1/projects/default/commands")).json()["commands"]

    def audit(task_id: str) -> list[tuple[str, str, Any, str]]:
        return [
            (c["verb"], c["status"], c["args"], c["issued_by"])
            for c in commands
            if c["target"].endswith(f"/tasks/{task_id}")
        ]

    assert audit(enrai_uuid) == audit(v1_id) != []


async def v1_task(admin_http: httpx.AsyncClient, enrai_id: str) -> dict[str, Any]:
    """The v1 task behind an Enrai id, found by its label."""
    response = await admin_http.get(
        "/v1/projects/default/tasks", params={"filter.labels[enrai_id]": enrai_id}
    )
    [task] = response.json()["tasks"]
    return dict(task)


async def anonymous_key(admin_http: httpx.AsyncClient) -> str:
    keys = (await admin_http.get("/v1/projects/default/apiKeys")).json()["api_keys"]
    [key] = [k["name"] for k in keys if k["display_name"] == "compat anonymous (operator)"]
    return str(key)


async def anonymous_token(server: ConveyorServer) -> str:
    # The token the server derived for itself: the test reads it as the app holds it.
    from conveyor.server.domain.anonymous_keys import ensure_anonymous_key

    return await ensure_anonymous_key(server.context.pool, server.context.server_key, "operator")
