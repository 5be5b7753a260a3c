"""Seed 001, the Celery admin API ("brain"), served under /api/v1/projects/{slug}: its
documented request bodies sent as written, TaskPublic field by field, the filters, the
cursor, csv/xlsx/json export, the tree, bulk delete, the nine commands with their
bounds, the audit chain, and the same rows and audit entries as v1."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest_asyncio
from compat_support import assert_seed_problem, curl_examples, rest, seed_text  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, queue_pb2

TEXT = seed_text("001")
BASE = "/api/v1/projects/alpha"
TASK_FIELDS = [
    "id", "project_id", "engine", "task_id", "name", "queue", "state", "priority", "args",
    "kwargs", "result", "exception", "traceback", "retry_count", "eta", "received_at",
    "started_at", "finished_at", "runtime_ms", "worker_name", "parent_task_id",
    "root_task_id", "tags", "created_at", "updated_at",
]  # fmt: skip
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def documented_bodies(text: str) -> dict[str, dict[str, Any]]:
    """Each `POST /api/v1/projects/{slug}/...` of the seed with the JSON body printed
    under it, parsed as written (cancel-consumer has "the same body shape as
    add-consumer")."""
    bodies: dict[str, dict[str, Any]] = {}
    heads = list(re.finditer(r"^(GET|POST) /api/v1/projects/\{slug\}/(\S+)$", text, re.M))
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        section = text[head.end() : end]
        start = section.find("\n{")
        if head.group(1) != "POST" or start < 0:
            continue
        depth = 0
        for j, ch in enumerate(section[start + 1 :], start + 1):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0:
                bodies[head.group(2)] = json.loads(section[start + 1 : j + 1])
                break
    bodies["commands/cancel-consumer"] = dict(bodies["commands/add-consumer"])
    return bodies


@asynccontextmanager
async def grpc(server: ConveyorServer, key: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=key, project="alpha") as client:
        yield client


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with grpc(server, keys["admin"]) as client:
        yield client


async def failed_task(client: AsyncClient, kind: str = "email.send", **options: Any) -> Any:
    """A task that ran once and failed for good (with a traceback), on its own queue."""
    queue = options.pop("queue", "failing")
    task = await client.create_task(kind, {"to": "ada@example.com"}, queue=queue, **options)
    [lease] = await client.lease_tasks([queue], worker="worker-1")
    assert lease.task.name == task.name
    return await client.fail_task(
        task.name,
        lease.lease_id,
        error_type="ValueError",
        message="bad address",
        details={"traceback": "Traceback (most recent call last): ..."},
        retryable=False,
    )


def test_the_seed_shows_bodies_not_curl_commands() -> None:
    # Every curl example runs verbatim elsewhere; this seed has none, so its documented
    # request bodies are what these tests send as written.
    assert curl_examples(TEXT) == []
    bodies = documented_bodies(TEXT)
    assert sorted(bodies) == sorted(
        ["tasks/bulk-delete"]
        + [
            f"commands/{a}"
            for a in (
                "retry-task", "cancel-task", "bulk-retry", "purge-queue", "restart-worker",
                "pool-resize", "add-consumer", "cancel-consumer", "rate-limit",
            )
        ]
    )  # fmt: skip


async def test_task_public_field_by_field(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    task = await failed_task(admin, priority=2, labels={"team": "mail"})
    async with rest(server.http_base_url, keys["viewer"]) as http:
        response = await http.get(f"{BASE}/tasks/celery/{task.name.rsplit('/', 1)[-1]}")
    assert response.status_code == 200, response.text
    item = response.json()
    assert list(item) == TASK_FIELDS
    task_id = task.name.rsplit("/", 1)[-1]
    assert item["id"] == item["task_id"] == task_id
    assert item["project_id"] == "alpha" and item["engine"] == "celery"
    assert item["name"] == "email.send" and item["queue"] == "failing"
    assert item["state"] == "failed" and item["priority"] == "critical"
    assert item["args"] == [] and item["kwargs"] == {"to": "ada@example.com"}
    assert item["result"] is None
    assert item["exception"] == "ValueError: bad address"
    assert item["traceback"] == "Traceback (most recent call last): ..."
    assert item["retry_count"] == 0 and item["eta"] is None
    for key in ("received_at", "started_at", "finished_at", "created_at", "updated_at"):
        assert RFC3339.match(item[key]), (key, item[key])
    assert isinstance(item["runtime_ms"], int) and item["runtime_ms"] >= 0
    assert item["worker_name"] == "worker-1"
    assert item["parent_task_id"] is None and item["root_task_id"] is None
    assert item["tags"] == ["team=mail"]


async def test_list_filters_comma_lists_and_cursor(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    failed = await failed_task(admin, priority=1)
    high = await admin.create_task("report.build", [1, 2], queue="reports", priority=3)
    await admin.create_task("report.build", {"args": [3], "kwargs": {"x": 1}}, priority=7)
    async with rest(server.http_base_url, keys["viewer"]) as http:

        async def ids(**params: str) -> list[str]:
            response = await http.get(f"{BASE}/tasks", params=params)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["items"]]

        every = await ids()
        assert len(every) == 3
        assert await ids(state="failed") == [failed.name.rsplit("/", 1)[-1]]
        assert sorted(await ids(priority="critical,high")) == sorted(
            t.name.rsplit("/", 1)[-1] for t in (failed, high)
        )
        assert await ids(name="email.send") == [failed.name.rsplit("/", 1)[-1]]
        assert await ids(queue="reports") == [high.name.rsplit("/", 1)[-1]]
        assert await ids(worker="worker-1") == [failed.name.rsplit("/", 1)[-1]]
        assert len(await ids(search="report")) == 2
        assert len(await ids(since="2000-01-01T00:00:00Z", until="2999-01-01T00:00:00Z")) == 3
        assert await ids(until="2000-01-01T00:00:00Z") == []
        assert len(await ids(state="received")) == 2

        # The cursor walks every task once, `limit` at a time.
        seen: list[str] = []
        cursor = ""
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await http.get(f"{BASE}/tasks", params=params)).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(every)

        # `fields` projects; `format=json` is the JSON page.
        page = (await http.get(f"{BASE}/tasks", params={"fields": "id,state"})).json()
        assert all(list(item) == ["id", "state"] for item in page["items"])
        as_json = (await http.get(f"{BASE}/tasks", params={"format": "json"})).json()
        assert [i["id"] for i in as_json["items"]] == every
        listed = {i["id"]: i for i in as_json["items"]}
        assert listed[high.name.rsplit("/", 1)[-1]]["args"] == [1, 2]

        for params, field in (
            ({"state": "exploded"}, "state"),
            ({"priority": "urgent"}, "priority"),
            ({"limit": "0"}, "limit"),
            ({"limit": "5001"}, "limit"),
            ({"since": "yesterday"}, "since"),
            ({"format": "pdf"}, "format"),
            ({"fields": "id,colour"}, "fields"),
        ):
            problem = assert_seed_problem(
                await http.get(f"{BASE}/tasks", params=params), 400, "invalid_argument"
            )
            assert problem["errors"][0]["field"] == field, problem


async def test_csv_and_xlsx_exports_stream_every_task(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    for i in range(7):
        await admin.create_task("export.me", {"i": i}, priority=1 + i % 9)
    async with rest(server.http_base_url, keys["viewer"]) as http:
        csv = await http.get(f"{BASE}/tasks", params={"format": "csv", "limit": "2"})
        assert csv.status_code == 200, csv.text
        assert csv.headers["content-type"].startswith("text/csv")
        assert 'filename="tasks.csv"' in csv.headers["content-disposition"]
        lines = csv.content.rstrip(b"\r\n").split(b"\n")
        assert len(lines) == 1 + 7  # the header and every task: no pagination
        picked = await http.get(
            f"{BASE}/tasks",
            params={"format": "csv", "fields": "task_id,name,state", "priority": "critical"},
        )
        rows = picked.content.decode().strip().splitlines()
        assert rows[0].split(",") == ["name", "kind", "state"] and len(rows) == 1 + 2
        xlsx = await http.get(f"{BASE}/tasks", params={"format": "xlsx"})
        assert xlsx.status_code == 200
        assert xlsx.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        assert "xl/worksheets/sheet1.xml" in zipfile.ZipFile(io.BytesIO(xlsx.content)).namelist()


async def test_tree_walks_to_the_root(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    root = await admin.create_task("flow.root")
    child = await admin.create_task("flow.child", parent_task=root.name)
    grandchild = await admin.create_task("flow.leaf", parent_task=child.name)
    await admin.create_task("other")
    leaf_id = grandchild.name.rsplit("/", 1)[-1]
    async with rest(server.http_base_url, keys["viewer"]) as http:
        tree = (await http.get(f"{BASE}/tasks/celery/{leaf_id}/tree")).json()
        assert list(tree) == ["items", "truncated"] and tree["truncated"] is False
        assert [i["name"] for i in tree["items"]] == ["flow.root", "flow.child", "flow.leaf"]
        root_id = root.name.rsplit("/", 1)[-1]
        assert tree["items"][0]["root_task_id"] is None
        assert tree["items"][2]["root_task_id"] == root_id
        assert tree["items"][2]["parent_task_id"] == child.name.rsplit("/", 1)[-1]
        assert_seed_problem(await http.get(f"{BASE}/tasks/rq/{leaf_id}"), 400, "invalid_argument")
        missing = await http.get(f"{BASE}/tasks/celery/{leaf_id[:-4]}0000/tree")
        assert_seed_problem(missing, 404, "not_found")
        # Another project's slug: the key of alpha may not look.
        other = await http.get(f"/api/v1/projects/beta/tasks/celery/{leaf_id}")
        assert other.status_code == 403


async def test_bulk_delete_by_ids_by_filter_and_both(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    a = await failed_task(admin, queue="default")
    b = await failed_task(admin, kind="report.build", queue="default")
    c = await failed_task(admin, queue="default")
    running = await admin.create_task("email.send")
    ids = [t.name.rsplit("/", 1)[-1] for t in (a, b, c, running)]
    documented = documented_bodies(TEXT)["tasks/bulk-delete"]
    async with (
        rest(server.http_base_url, keys["admin"]) as http,
        rest(server.http_base_url, keys["operator"]) as ops,
    ):
        url = f"{BASE}/tasks/bulk-delete"
        refused = await ops.post(url, json={"task_ids": ids[:1]})
        assert refused.status_code == 403
        # The documented body: ids and every filter; only the named tasks that the
        # filter also matches go (b is another kind; the filter's dates are the seed's).
        body = {**documented, "task_ids": ids[:2]}
        body.update(filter_since="2000-01-01T00:00:00Z", filter_until="2999-01-01T00:00:00Z")
        both = await http.post(url, json=body)
        assert both.status_code == 200, both.text
        assert both.json() == {"deleted_count": 1}
        as_written = await http.post(url, json={**documented, "task_ids": ids[2:3]})
        assert as_written.json() == {"deleted_count": 0}  # 2026-04-16 matches nothing
        by_ids = await http.post(url, json={"task_ids": ids[1:], "project_id": "beta"})
        assert by_ids.json() == {"deleted_count": 2}  # the queued one is not finished
        assert (await http.post(url, json={"filter_state": "failed"})).json() == {
            "deleted_count": 0
        }
        too_many = await http.post(url, json={"task_ids": ids[3:] * 1001})
        assert assert_seed_problem(too_many, 400, "invalid_argument")["errors"][0][
            "field"
        ].startswith("task_ids")
        empty = await http.post(url, json={})
        assert_seed_problem(empty, 400, "invalid_argument")
    remaining = [t.name async for t in admin.list_tasks()]
    assert remaining == [running.name]


def filled(body: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A documented body with its placeholders ("...", "9d2c...", "<hmac ...>",
    "optional-string") replaced by real values; every other value as the seed wrote it."""
    out = dict(body)
    for key, value in body.items():
        if isinstance(value, str) and (
            "..." in value or value.startswith("<") or value == "optional-string"
        ):
            out[key] = values.pop(key)
    out.update(values)
    return out


async def finished(http: httpx.AsyncClient, command_id: str) -> dict[str, Any]:
    """The command once it has finished (a bulk retry runs on after its answer)."""
    deadline = time.monotonic() + 30
    while True:
        record = dict((await http.get(f"{BASE}/commands/{command_id}")).json())
        if record["status"] not in ("issued", "dispatched"):
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.05)


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
        return filled(
            bodies[f"commands/{action}"],
            **{"agent_id": "worker-1", "idempotency_key": "", **values},
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


async def test_args_read_redacted_as_the_seed_shows(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    """The seed's `"args": ["<redacted>"]`: redaction is v1's (the project's
    redact_paths, viewers read them redacted); the brain shows what v1 returns."""
    async with rest(server.http_base_url, keys["admin"]) as http:
        updated = await http.patch("/v1/projects/alpha", json={"redact_paths": ["/args/0", "to"]})
        assert updated.status_code == 200, updated.text
    task = await admin.create_task(
        "email.send", {"args": ["s3cret", 2], "kwargs": {"to": "ada@example.com", "n": 1}}
    )
    url = f"{BASE}/tasks/celery/{task.name.rsplit('/', 1)[-1]}"
    async with rest(server.http_base_url, keys["viewer"]) as http:
        item = (await http.get(url)).json()
        assert item["args"] == ["<redacted>", 2]
        assert item["kwargs"] == {"to": "<redacted>", "n": 1}
        listed = (await http.get(f"{BASE}/tasks")).json()["items"]
        assert listed[0]["args"] == ["<redacted>", 2]
    async with rest(server.http_base_url, keys["operator"]) as http:
        item = (await http.get(url)).json()
        assert item["args"] == ["s3cret", 2] and item["kwargs"]["to"] == "ada@example.com"


async def test_bulk_delete_and_bulk_retry_share_v1s_bulk_limiter(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient, database_url: str
) -> None:
    tasks = [await admin.create_task("job", i, queue="parked") for i in range(3)]
    for task in tasks:
        await admin.cancel_task(task.name)
    async with rest(server.http_base_url, keys["admin"]) as http:
        # A locked row keeps the bulk retry (and so the project's bulk slot) running.
        blocker = await psycopg.AsyncConnection.connect(database_url)
        async with blocker, blocker.transaction():
            task_id = uuid.UUID(tasks[0].name.rsplit("/", 1)[1])
            await blocker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", [task_id])
            retry = await http.post(
                f"{BASE}/commands/bulk-retry",
                json={"agent_id": "a", "filter": {"state": "cancelled"}, "max": 10},
            )
            assert retry.status_code == 202 and retry.json()["status"] == "issued"
            refused = await http.post(
                f"{BASE}/tasks/bulk-delete", json={"filter_state": "cancelled"}
            )
            problem = assert_seed_problem(refused, 412, "bulk_action_running")
            assert "BatchRetryTasks" in problem["detail"]
        done = await finished(http, retry.json()["id"])
        assert done["status"] == "succeeded"


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
