"""Seed 001, the Celery admin API ("brain"), served under /api/v1/projects/{slug}: its
task reads. TaskPublic field by field, the filters and comma lists, the cursor,
csv/xlsx/json export, the tree, bulk delete (v1's bulk limiter), args as v1 redacts
them. The commands are test_compat_celery_commands.py."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest_asyncio
from celery_support import (  # type: ignore[import-not-found]
    BASE,
    RFC3339,
    TASK_FIELDS,
    TEXT,
    documented_bodies,
    failed_task,
    finished,
)
from compat_support import assert_seed_problem, curl_examples, rest  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        yield c


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


async def test_received_and_retried_each_list_their_own(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    # v1's SCHEDULED is received (a later ETA) or retried (a retry backoff): each brain
    # state lists only its own, though v1 filters both as SCHEDULED.
    later = await admin.create_task(
        "report.build", queue="later", schedule_time=datetime.now(UTC) + timedelta(hours=1)
    )
    retrying = await admin.create_task(
        "email.send", queue="retrying", retry_policy={"max_attempts": 3, "initial_backoff": 3600}
    )
    [lease] = await admin.lease_tasks(["retrying"], worker="worker-1")
    await admin.fail_task(retrying.name, lease.lease_id, error_type="E", message="again")
    async with rest(server.http_base_url, keys["viewer"]) as http:

        async def states(**params: str) -> dict[str, str]:
            response = await http.get(f"{BASE}/tasks", params=params)
            assert response.status_code == 200, response.text
            return {item["id"]: item["state"] for item in response.json()["items"]}

        later_id, retrying_id = (t.name.rsplit("/", 1)[-1] for t in (later, retrying))
        assert await states(state="retried") == {retrying_id: "retried"}
        assert await states(state="received") == {later_id: "received"}
        assert await states(state="received,retried") == {
            later_id: "received",
            retrying_id: "retried",
        }


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
            # The next step: the same request again, once the running one has finished.
            [later] = problem["allowed_actions"]
            assert {k: later[k] for k in ("rel", "method", "href", "operation_id")} == {
                "rel": "retry-later",
                "method": "POST",
                "href": f"{BASE}/tasks/bulk-delete",
                "operation_id": "bulk_delete_tasks",
            }
            assert "BatchRetryTasks" in later["hint"] and "finished" in later["hint"]
        done = await finished(http, retry.json()["id"])
        assert done["status"] == "succeeded"
