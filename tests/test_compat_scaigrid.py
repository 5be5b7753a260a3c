"""Seed 004, ScaiGrid's queue and scheduled tasks, served under /v1/queue and
/v1/scheduled-tasks: every documented path, the documented POST body as written, jobs
(submit, status, cancel, "your jobs"), HITL, correlation, depth, and the same rows and
audit entries as v1."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from compat_support import assert_seed_problem, curl_examples, rest, seed_text  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, task_pb2

TEXT = seed_text("004")
JOB_FIELDS = [
    "job_id", "function", "args", "kwargs", "queue_name", "status", "outcome", "success",
    "result", "error", "job_try", "priority", "correlation_id", "parent_job_id",
    "cancel_requested", "hitl", "enqueue_time", "defer_until", "start_time", "finish_time",
]  # fmt: skip
SCHEDULED_FIELDS = [
    "id", "name", "schedule", "timezone", "action", "args", "enabled", "next_run_at",
    "last_run_at", "run_count", "created_at", "updated_at",
]  # fmt: skip
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def documented_body(text: str) -> dict[str, Any]:
    """The jsonc POST body under "POST body", its `// comments` dropped."""
    start = text.index("{", text.index("POST body"))
    end = text.index("\n}", start) + 2
    lines = [re.sub(r"\s+//.*$", "", line) for line in text[start:end].splitlines()]
    return dict(json.loads("\n".join(lines)))


def documented_paths(text: str) -> list[tuple[str, str]]:
    """(method, path) of every row of the seed's endpoint tables."""
    return re.findall(r"^(GET|POST|PATCH|DELETE) (/v1/\S+) ", text, re.M)


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        yield c


async def submit(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await http.post("/v1/queue/jobs", json={"function": "send_message", **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_the_documented_post_body_creates_a_scheduled_task(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    assert curl_examples(TEXT) == []  # the seed shows a body, sent here as written
    body = documented_body(TEXT)
    assert body["schedule"] == "0 9 * * MON" and body["enabled"] is True
    async with rest(server.http_base_url, keys["operator"]) as http:
        created = await http.post("/v1/scheduled-tasks", json=body)
        assert created.status_code == 201, created.text
        task = created.json()
        assert list(task) == SCHEDULED_FIELDS
        for key in ("name", "schedule", "timezone", "action", "args", "enabled"):
            assert task[key] == body[key], key
        assert RFC3339.match(task["next_run_at"]) and task["last_run_at"] is None
        assert task["run_count"] == 0
        url = f"/v1/scheduled-tasks/{task['id']}"
        listed = (await http.get("/v1/scheduled-tasks")).json()
        assert [t["id"] for t in listed["scheduled_tasks"]] == [task["id"]]
        assert listed["next_cursor"] is None
        off = (await http.patch(url, json={"enabled": False})).json()
        assert off["enabled"] is False and off["schedule"] == body["schedule"]
        moved = (await http.patch(url, json={"schedule": "0 10 * * TUE", "enabled": True})).json()
        assert moved["schedule"] == "0 10 * * TUE" and moved["enabled"] is True
        assert moved["name"] == body["name"] and moved["args"] == body["args"]
        for sent, field in (
            ({"schedule": "whenever"}, "schedule"),
            ({"timezone": "Nowhere/Land"}, "timezone"),
            ({"enabled": "yes"}, "enabled"),
            ({"colour": 1}, "colour"),
        ):
            problem = assert_seed_problem(await http.patch(url, json=sent), 400, "invalid_argument")
            assert problem["errors"][0]["field"] == field, problem
        disabled = await http.post("/v1/scheduled-tasks", json={**body, "enabled": False})
        assert disabled.json()["enabled"] is False
        deleted = await http.delete(url)
        assert deleted.status_code == 204
        assert_seed_problem(await http.patch(url, json={"name": "x"}), 404, "not_found")
    async with rest(server.http_base_url, keys["admin"]) as other:
        # "Your" scheduled tasks: the admin key created none.
        assert (await other.get("/v1/scheduled-tasks")).json()["scheduled_tasks"] == []


async def test_every_documented_path_is_served(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    paths = documented_paths(TEXT)
    assert len(paths) == 14  # 9 queue, 1 observability, 4 scheduled
    async with rest(server.http_base_url, keys["admin"]) as http:
        job = await submit(http, correlation_id="c-1")
        gated = await submit(http, requires_approval=True)
        rejected = await submit(http, requires_approval=True)
        schedule = (await http.post("/v1/scheduled-tasks", json=documented_body(TEXT))).json()
        values = {
            "job_id": job["job_id"],
            "request_id": gated["job_id"],
            "correlation_id": "c-1",
            "task_id": schedule["id"],
        }
        for method, path in paths:
            if path.endswith("/..."):
                path = path.replace("...", "queues")  # the one observability path served
            url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
            if path.endswith("/reject"):
                url = url.replace(gated["job_id"], rejected["job_id"])
            body = (
                documented_body(TEXT) if (method, path) == ("POST", "/v1/scheduled-tasks") else {}
            )
            if method == "POST" and path == "/v1/queue/jobs":
                body = {"function": "run_query"}
            if method == "PATCH":
                body = {"name": "renamed"}
            response = await http.request(
                method, url, json=body if method != "GET" and method != "DELETE" else None
            )
            assert response.status_code in (200, 201, 204), (method, url, response.text)


async def test_jobs_submit_status_cancel_and_your_jobs(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    async with (
        rest(server.http_base_url, keys["operator"]) as ops,
        rest(server.http_base_url, keys["admin"]) as adm,
    ):
        job = await submit(
            ops, args=["room-1"], kwargs={"body": "hi"}, queue_name="bots", priority=2,
            correlation_id="c-9", max_tries=2,
        )  # fmt: skip
        assert list(job) == JOB_FIELDS
        assert job["function"] == "send_message" and job["queue_name"] == "bots"
        assert job["args"] == ["room-1"] and job["kwargs"] == {"body": "hi"}
        assert job["status"] == "queued" and job["outcome"] is None and job["success"] is None
        assert job["job_try"] == 0 and job["priority"] == 2 and job["correlation_id"] == "c-9"
        assert job["hitl"] is None and job["cancel_requested"] is False
        assert RFC3339.match(job["enqueue_time"]) and job["start_time"] is None
        task = await admin.get_task(f"projects/alpha/tasks/{job['job_id']}")
        assert task.retry_policy.max_attempts == 2
        got = (await ops.get(f"/v1/queue/jobs/{job['job_id']}")).json()
        assert got == job
        deferred = await submit(ops, defer_by=3600)
        assert deferred["status"] == "deferred" and RFC3339.match(deferred["defer_until"])
        # The same job id: the job already holding it, not a second one (ARQ's rule).
        first = await submit(ops, job_id="nightly-1")
        assert (await submit(ops, job_id="nightly-1"))["job_id"] == first["job_id"]
        cancelled = (await ops.post(f"/v1/queue/jobs/{job['job_id']}/cancel")).json()
        assert cancelled["status"] == "complete" and cancelled["outcome"] == "cancelled"
        assert cancelled["success"] is False
        again = await ops.post(f"/v1/queue/jobs/{job['job_id']}/cancel")
        problem = assert_seed_problem(again, 412, "task_state_conflict")
        # The next step reads the job on this seed's own route, not v1's.
        [refresh] = problem["allowed_actions"]
        assert {k: refresh[k] for k in ("rel", "method", "href", "operation_id")} == {
            "rel": "refresh",
            "method": "GET",
            "href": f"/v1/queue/jobs/{job['job_id']}",
            "operation_id": "get_job",
        }
        assert (await ops.get(refresh["href"])).json() == cancelled
        theirs = await submit(adm, function="trigger_ai")
        mine = (await ops.get("/v1/queue/jobs")).json()
        assert theirs["job_id"] not in {j["job_id"] for j in mine["jobs"]}
        assert len(mine["jobs"]) == 3 and mine["next_cursor"] is None
        queued = (await ops.get("/v1/queue/jobs", params={"status": "deferred"})).json()
        assert [j["job_id"] for j in queued["jobs"]] == [deferred["job_id"]]
        paged = (await ops.get("/v1/queue/jobs", params={"limit": 2})).json()
        assert len(paged["jobs"]) == 2 and paged["next_cursor"]
        for sent, field in (
            ({"function": ""}, "function"),
            ({"function": "x" * 201}, "function"),
            ({"function": "f", "args": {"a": 1}}, "args"),
            ({"function": "f", "defer_by": 5, "defer_until": "2999-01-01T00:00:00Z"}, "defer_by"),
            ({"function": "f", "priority": 0.5}, "priority"),
            ({"function": "f", "queue_name": "Bad Queue"}, "queue_name"),
        ):
            problem = assert_seed_problem(
                await ops.post("/v1/queue/jobs", json=sent), 400, "invalid_argument"
            )
            assert problem["errors"][0]["field"] == field, (sent, problem)
            [step] = problem["allowed_actions"]
            assert step["rel"] == "fix-and-retry" and step["href"] == "/v1/queue/jobs"
            assert step["operation_id"] == "submit_job" and field in step["hint"], step
            if sent["function"] == "x" * 201:
                assert step["hint"] == "Shorten 'function' to <= 200 chars."
        # A malformed id in the path is named as the seed names it.
        for url, field in (
            ("/v1/queue/jobs/not-a-job", "job_id"),
            ("/v1/queue/hitl/not-a-job/approve", "request_id"),
            ("/v1/scheduled-tasks/Not_An_Id", "task_id"),
        ):
            method = "GET" if url.startswith("/v1/queue/jobs") else "POST"
            if url.startswith("/v1/scheduled-tasks"):
                method = "PATCH"
            bad = await ops.request(method, url, json={"name": "x"} if method == "PATCH" else None)
            problem = assert_seed_problem(bad, 400, "invalid_argument")
            assert problem["errors"][0]["field"] == field, problem
    async with rest(server.http_base_url, keys["viewer"]) as viewer:
        refused = await viewer.post("/v1/queue/jobs", json={"function": "f"})
        assert refused.status_code == 403


async def test_hitl_approve_and_reject(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with rest(server.http_base_url, keys["operator"]) as http:
        gated = await submit(http, requires_approval=True, approval_timeout_seconds=3600)
        other = await submit(http, requires_approval=True)
        await submit(http)
        assert gated["status"] == "queued"
        assert (
            gated["hitl"]["status"] == "pending" and gated["hitl"]["request_id"] == gated["job_id"]
        )
        pending = (await http.get("/v1/queue/hitl")).json()
        assert sorted(r["request_id"] for r in pending["requests"]) == sorted(
            [gated["job_id"], other["job_id"]]
        )
        [request] = [r for r in pending["requests"] if r["request_id"] == gated["job_id"]]
        assert list(request) == [
            "request_id", "job_id", "function", "args", "kwargs", "queue_name",
            "correlation_id", "status", "created_at", "expires_at",
        ]  # fmt: skip
        assert RFC3339.match(request["expires_at"])
        approved = await http.post(
            f"/v1/queue/hitl/{gated['job_id']}/approve", json={"comment": "looks fine"}
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "queued"
        assert approved.json()["hitl"]["status"] == "approved"
        assert approved.json()["hitl"]["comment"] == "looks fine"
        rejected = (await http.post(f"/v1/queue/hitl/{other['job_id']}/reject")).json()
        assert rejected["status"] == "complete" and rejected["outcome"] == "cancelled"
        assert rejected["hitl"]["status"] == "rejected"
        assert (await http.get("/v1/queue/hitl")).json()["requests"] == []
        twice = await http.post(f"/v1/queue/hitl/{gated['job_id']}/approve")
        assert_seed_problem(twice, 412, "task_state_conflict")


async def test_correlation_and_depth(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    async with rest(server.http_base_url, keys["operator"]) as http:
        related = [(await submit(http, correlation_id="conv-7"))["job_id"] for _ in range(3)]
        await submit(http, correlation_id="conv-8")
        await submit(http, defer_by=600)
        await submit(http, requires_approval=True, queue_name="gated")
        await admin.lease_tasks(["default"], worker="w-1")
        found = (await http.get("/v1/queue/correlation/conv-7")).json()
        assert found["correlation_id"] == "conv-7"
        assert sorted(j["job_id"] for j in found["jobs"]) == sorted(related)
        depth = (await http.get("/v1/queue/depth")).json()
        by_queue = {q["queue_name"]: q for q in depth["queues"]}
        assert by_queue["default"] == {
            "queue_name": "default", "queued": 3, "deferred": 1, "in_progress": 1,
            "awaiting_approval": 0,
        }  # fmt: skip
        assert by_queue["gated"]["queued"] == 1 and by_queue["gated"]["awaiting_approval"] == 1
        assert depth["total"] == {"queued": 4, "deferred": 1, "in_progress": 1,
                                  "awaiting_approval": 1}  # fmt: skip
    async with rest(server.http_base_url, keys["admin"]) as http:
        detail = (await http.get("/v1/queue/observability/queues")).json()
        [default] = [q for q in detail["queues"] if q["queue_name"] == "default"]
        assert default["paused"] is False and default["oldest_queued_age_seconds"] is not None
        assert "succeeded_last_hour" in default and "failed_last_hour" in default


async def test_observability_is_admin_only_as_the_seed_says(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    for role in ("viewer", "worker", "operator"):
        async with rest(server.http_base_url, keys[role]) as http:
            refused = await http.get("/v1/queue/observability/queues")
            problem = assert_seed_problem(refused, 403, "role_insufficient")
            [step] = problem["allowed_actions"]
            assert step["rel"] == "authenticate" and "role admin" in step["hint"], step
            # The depth metrics stay a viewer's read, as v1's ListQueues is.
            assert (await http.get("/v1/queue/depth")).status_code == 200
    async with rest(server.http_base_url, keys["admin"]) as http:
        assert (await http.get("/v1/queue/observability/queues")).status_code == 200


async def test_same_rows_and_audit_as_v1(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    async with rest(server.http_base_url, keys["operator"]) as http:
        seed = await submit(
            http, args=[1], kwargs={"k": "v"}, queue_name="q", priority=3, correlation_id="c",
            requires_approval=True,
        )  # fmt: skip
        v1 = await http.post(
            "/v1/projects/alpha/tasks",
            json={
                "kind": "send_message",
                "input": {"args": [1], "kwargs": {"k": "v"}},
                "queue": "q",
                "priority": 3,
                "correlation_id": "c",
                "requires_approval": True,
            },
        )
        assert v1.status_code == 200, v1.text
        v1_id = v1.json()["name"].rsplit("/", 1)[-1]
        await http.post(f"/v1/queue/hitl/{seed['job_id']}/approve", json={"comment": "ok"})
        await http.post(f"/v1/projects/alpha/tasks/{v1_id}:approve", json={"comment": "ok"})
    rows = [await admin.get_task(f"projects/alpha/tasks/{i}") for i in (seed["job_id"], v1_id)]
    for row in rows:
        for field in ("name", "root_task", "create_time", "update_time", "schedule_time"):
            row.ClearField(field)
        row.approval.ClearField("decide_time")
    assert rows[0] == rows[1]
    page = await admin.commands.ListCommands(
        command_pb2.ListCommandsRequest(
            parent="projects/alpha",
            filter=command_pb2.CommandFilter(verbs=[enums_pb2.COMMAND_VERB_APPROVE_TASK]),
        )
    )
    shapes = [
        (c.status, c.issued_by, json.dumps(dict(c.args), sort_keys=True, default=str))
        for c in page.commands
    ]
    assert len(shapes) == 2 and shapes[0] == shapes[1]
    assert {c.target for c in page.commands} == {
        f"projects/alpha/tasks/{i}" for i in (seed["job_id"], v1_id)
    }
    assert isinstance(rows[0], task_pb2.Task)
