"""Seed 001, the Celery admin API ("brain"): its /commands. Every documented body sent
as written, the nine commands' bounds and roles, the audit chain, override_kwargs, and
the same rows and audit entries as v1."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from celery_support import (  # type: ignore[import-not-found]
    BASE,
    RFC3339,
    TEXT,
    documented_bodies,
    failed_task,
    filled,
    finished,
)
from compat_support import assert_seed_problem, rest  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, queue_pb2


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        yield c


async def test_every_documented_command_body(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    bodies = documented_bodies(TEXT)
    retry_me = await failed_task(admin)
    cancel_me = await admin.create_task("email.send", queue="held")
    await failed_task(admin, queue="default")
    await admin.create_task("purge.me", queue="default")
    real = {
        "commands/retry-task": {"task_id": retry_me.name.rsplit("/", 1)[-1]},
        "commands/cancel-task": {"task_id": cancel_me.name.rsplit("/", 1)[-1]},
        "commands/bulk-retry": {},
    }
    expected = {
        "retry-task": ("succeeded", retry_me.name),
        "cancel-task": ("succeeded", cancel_me.name),
        "bulk-retry": (None, "projects/alpha"),
        "purge-queue": ("succeeded", "projects/alpha/queues/default"),
        "restart-worker": ("issued", "projects/alpha/workers/worker-1"),
        "pool-resize": ("issued", "projects/alpha/workers/worker-1"),
        "add-consumer": ("issued", "projects/alpha/workers/worker-1"),
        "cancel-consumer": ("issued", "projects/alpha/workers/worker-1"),
        "rate-limit": ("succeeded", "projects/alpha"),
    }
    records: dict[str, dict[str, Any]] = {}
    async with rest(server.http_base_url, keys["admin"]) as http:
        for path, body in bodies.items():
            if not path.startswith("commands/"):
                continue
            action = path.removeprefix("commands/")
            if action == "purge-queue":
                # After the bulk retry (a bulk action too) is done: the token is minted
                # from the queue's depth, which the retry changed.
                await finished(http, records["bulk-retry"]["id"])
                queue = await admin.queues.GetQueue(
                    queue_pb2.GetQueueRequest(name="projects/alpha/queues/default")
                )
                real[path] = {"confirm_token": queue.purge_confirm_token}
            sent = filled(
                body, agent_id="worker-1", idempotency_key=f"key-{action}", **real.get(path, {})
            )
            response = await http.post(f"{BASE}/{path}", json=sent)
            assert response.status_code == 202, (path, response.text)
            record = response.json()
            status, target = expected[action]
            assert record["type"] == action
            assert record["project_id"] == "alpha"
            if status is not None:
                assert record["status"] == status, (action, record)
            assert record["target"].startswith(target), (action, record)
            assert record["signature"] and record["digest"] and record["sequence"] > 0
            assert RFC3339.match(record["issued_at"])
            records[action] = record
        assert records["pool-resize"]["args"]["delta"] == 2
        assert records["add-consumer"]["args"]["queue"] == "billing"
        assert records["rate-limit"]["args"]["rate_limit"] == "100/m"
        assert records["rate-limit"]["severity"] == "normal"  # one worker, not broadcast
        assert records["restart-worker"]["agent_id"] == "worker-1"
        assert records["retry-task"]["idempotency_key"] == "key-retry-task"

        # The same idempotency key again: the first command, nothing done twice.
        again = await http.post(
            f"{BASE}/commands/retry-task",
            json=filled(
                bodies["commands/retry-task"],
                agent_id="worker-1",
                idempotency_key="key-retry-task",
                task_id=retry_me.name.rsplit("/", 1)[-1],
            ),
        )
        assert again.json()["id"] == records["retry-task"]["id"]

        # Reads: the list (status filter, cursor) and one command, with the chain.
        listed: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            page = (await http.get(f"{BASE}/commands", params=params)).json()
            listed += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        by_sequence = sorted(listed, key=lambda c: c["sequence"])
        assert [c["sequence"] for c in by_sequence] == list(range(1, len(listed) + 1))
        for before, after in itertools.pairwise(by_sequence):
            assert after["prev_digest"] == before["digest"]
        issued = (await http.get(f"{BASE}/commands", params={"status": "issued"})).json()
        assert {c["type"] for c in issued["items"]} == {
            "restart-worker", "pool-resize", "add-consumer", "cancel-consumer",
        }  # fmt: skip
        bad = await http.get(f"{BASE}/commands/Not_An_Id")
        problem = assert_seed_problem(bad, 400, "invalid_argument")
        assert problem["errors"][0]["field"] == "command_id"
        one = (await http.get(f"{BASE}/commands/{records['pool-resize']['id']}")).json()
        assert one == records["pool-resize"]
    verdict = await admin.commands.VerifyAuditLog(
        command_pb2.VerifyAuditLogRequest(parent="projects/alpha")
    )
    assert verdict.ok


async def test_command_bounds_and_roles(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    bodies = documented_bodies(TEXT)
    task = await failed_task(admin)
    task_id = task.name.rsplit("/", 1)[-1]
    await admin.create_task("purge.me", queue="default")

    def body(action: str, **values: Any) -> dict[str, Any]:
        return dict(
            filled(
                bodies[f"commands/{action}"],
                **{"agent_id": "worker-1", "idempotency_key": "", **values},
            )
        )

    async with (
        rest(server.http_base_url, keys["admin"]) as http,
        rest(server.http_base_url, keys["operator"]) as ops,
    ):
        cases = [
            ("bulk-retry", body("bulk-retry", max=0), "max"),
            ("bulk-retry", body("bulk-retry", max=10001), "max"),
            ("pool-resize", body("pool-resize", delta=101), "delta"),
            ("pool-resize", body("pool-resize", delta=-101), "delta"),
            ("pool-resize", body("pool-resize", delta=0), "delta"),
            ("rate-limit", body("rate-limit", rate="100/x"), "rate"),
            (
                "retry-task",
                body("retry-task", task_id=task_id, override_kwargs={"x": "y" * 65 * 1024}),
                "override_kwargs",
            ),
            ("retry-task", body("retry-task", task_id=task_id, engine="rq"), "engine"),
            ("restart-worker", body("restart-worker", agent_id=""), "agent_id"),
            ("add-consumer", body("add-consumer", queue="Not A Queue!"), "queue"),
        ]
        for action, sent, field in cases:
            problem = assert_seed_problem(
                await http.post(f"{BASE}/commands/{action}", json=sent), 400, "invalid_argument"
            )
            assert problem["errors"][0]["field"] == field, (action, problem)
            [step] = [a for a in problem["allowed_actions"] if a["rel"] == "fix-and-retry"]
            assert step["href"] == f"{BASE}/commands/{action}"
        # The bounds themselves pass.
        for delta in (-100, 100):
            ok = await http.post(
                f"{BASE}/commands/pool-resize", json=body("pool-resize", delta=delta)
            )
            assert ok.status_code == 202, ok.text
        broadcast = await http.post(
            f"{BASE}/commands/rate-limit", json=body("rate-limit", worker_name="", rate="0")
        )
        assert broadcast.json()["severity"] == "critical"
        assert broadcast.json()["agent_id"] is None
        # A purge needs the token or force; a stale token says how to refresh it.
        stale = await http.post(
            f"{BASE}/commands/purge-queue", json=body("purge-queue", confirm_token="stale")
        )
        problem = assert_seed_problem(stale, 412, "purge_token_stale")
        assert [a["rel"] for a in problem["allowed_actions"]] == ["refresh"]
        forced = await http.post(
            f"{BASE}/commands/purge-queue", json=body("purge-queue", confirm_token="", force=True)
        )
        assert forced.status_code == 202 and forced.json()["severity"] == "critical"
        # Roles are v1's: an operator retries and cancels but does not purge or steer.
        for action in ("purge-queue", "restart-worker", "pool-resize", "rate-limit"):
            sent = body(action, confirm_token="", force=True)
            denied = await ops.post(f"{BASE}/commands/{action}", json=sent)
            assert denied.status_code == 403, (action, denied.text)
        retried = await ops.post(
            f"{BASE}/commands/retry-task", json=body("retry-task", task_id=task_id)
        )
        assert retried.status_code == 202


async def test_same_rows_and_audit_as_v1(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    """A retry and a bulk delete through the brain and through v1's REST leave the same
    task rows and the same audit entries (bar ids and times)."""
    seed_task = await failed_task(admin)
    v1_task = await failed_task(admin)
    async with rest(server.http_base_url, keys["operator"]) as http:
        seed = await http.post(
            f"{BASE}/commands/retry-task",
            json={"task_id": seed_task.name.rsplit("/", 1)[-1], "override_kwargs": {"to": "b"}},
        )
        assert seed.status_code == 202, seed.text
        v1 = await http.post(
            "/v1/projects/alpha/commands:retryTask",
            json={"task": v1_task.name, "override_input": {"to": "b"}},
        )
        assert v1.status_code == 200, v1.text
    async with rest(server.http_base_url, keys["admin"]) as http:
        for name in (seed_task.name, v1_task.name):
            await admin.cancel_task(name)
        assert (
            await http.post(
                f"{BASE}/tasks/bulk-delete", json={"task_ids": [seed_task.name.rsplit("/", 1)[-1]]}
            )
        ).json() == {"deleted_count": 1}
        v1_delete = await http.post(
            "/v1/projects/alpha/tasks:batchDelete", json={"names": [v1_task.name]}
        )
        assert v1_delete.json()["deleted_count"] == 1
    commands = [
        c
        async for c in _commands(admin)
        if c.verb in (enums_pb2.COMMAND_VERB_RETRY_TASK, enums_pb2.COMMAND_VERB_BATCH_DELETE_TASKS)
    ]

    def shape(c: command_pb2.Command) -> Any:
        args = json.loads(json.dumps(dict(c.args)))  # Struct -> plain
        args.pop("task", None)
        return (c.verb, c.status, c.issued_by, c.target.split("/tasks/")[0], sorted(args.items()))

    retries = [shape(c) for c in commands if c.verb == enums_pb2.COMMAND_VERB_RETRY_TASK]
    deletes = [shape(c) for c in commands if c.verb == enums_pb2.COMMAND_VERB_BATCH_DELETE_TASKS]
    assert len(retries) == 2 and retries[0] == retries[1]
    assert len(deletes) == 2 and deletes[0] == deletes[1]


async def _commands(client: AsyncClient) -> AsyncIterator[command_pb2.Command]:
    page = await client.commands.ListCommands(
        command_pb2.ListCommandsRequest(parent="projects/alpha", page_size=1000)
    )
    for command in page.commands:
        yield command


async def test_override_kwargs_keeps_the_args(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    task = await admin.create_task("email.send", {"args": [1, "x"], "kwargs": {"a": 1}}, queue="q")
    [lease] = await admin.lease_tasks(["q"], worker="worker-1")
    await admin.fail_task(task.name, lease.lease_id, retryable=False)
    async with rest(server.http_base_url, keys["operator"]) as http:
        retried = await http.post(
            f"{BASE}/commands/retry-task",
            json={"task_id": task.name.rsplit("/", 1)[-1], "override_kwargs": {"a": 2}},
        )
        assert retried.status_code == 202, retried.text
        item = (await http.get(f"{BASE}/tasks/celery/{task.name.rsplit('/', 1)[-1]}")).json()
    assert item["args"] == [1, "x"] and item["kwargs"] == {"a": 2}
    assert item["state"] == "received"


async def test_cancel_task_repeated_with_its_idempotency_key_answers_the_first(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    """idempotency_key is v1's request_id: the repeat answers the first command, where
    before it was a 412 (the task already cancelled); another body with it is refused."""
    first_task = await admin.create_task("email.send", queue="held")
    other_task = await admin.create_task("email.send", queue="held")
    url = f"{BASE}/commands/cancel-task"

    def body(task: Any, key: str) -> dict[str, str]:
        return {"task_id": task.name.rsplit("/", 1)[-1], "idempotency_key": key}

    async with rest(server.http_base_url, keys["operator"]) as http:
        first = await http.post(url, json=body(first_task, "cancel-1"))
        again = await http.post(url, json=body(first_task, "cancel-1"))
        assert (first.status_code, again.status_code) == (202, 202), again.text
        assert again.json() == first.json()
        assert first.json()["type"] == "cancel-task"
        reused = await http.post(url, json=body(other_task, "cancel-1"))
        assert_seed_problem(reused, 409, "request_id_reused")
        # Without the key a repeat is still refused: the task is already cancelled.
        unkeyed = await http.post(url, json={"task_id": body(first_task, "")["task_id"]})
        assert unkeyed.status_code == 412, unkeyed.text
    cancels = [c async for c in _commands(admin) if c.verb == enums_pb2.COMMAND_VERB_CANCEL_TASK]
    assert [c.target for c in cancels] == [first_task.name]
