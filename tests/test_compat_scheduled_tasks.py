"""Seed 003, the scheduled-tasks API, served at /tasks: the documented curl runs
verbatim, the task field by field, PUT partial update, offset paging, the created_by
filter, snooze and the other actions, and the same rows and audit entries as v1."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from compat_support import assert_seed_problem, curl_examples, rest, run_curl, seed_text  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, schedule_pb2

TEXT = seed_text("003")
TASK_FIELDS = [
    "id", "title", "description", "schedule_kind", "schedule_expr", "timezone", "payload",
    "created_by", "priority", "max_retries", "backoff_strategy", "dedupe_key",
    "dedupe_window_seconds", "concurrency_key", "status", "pause_reason", "next_run_at",
    "last_run_at", "snoozed_until", "snooze_reason", "run_count", "created_at", "updated_at",
]  # fmt: skip
# A value for each field of the seed's POST /tasks table (the test reads the table and
# checks that these are exactly its fields).
DEFINITION: dict[str, Any] = {
    "title": "Nightly report",
    "description": "Builds and mails the nightly report.",
    "schedule_kind": "cron",
    "schedule_expr": "0 2 * * *",
    "timezone": "Europe/Chisinau",
    "payload": {"steps": [{"run": "report.build"}, {"run": "email.send"}]},
    "created_by": "7f0c2a4e-3b1d-4c55-9a8e-0d6b2f1e9c01",
    "priority": 2,
    "max_retries": 4,
    "backoff_strategy": "linear",
    "dedupe_key": "nightly-report",
    "dedupe_window_seconds": 3600,
    "concurrency_key": "reports",
}
OTHER_AGENT = "0b9e4d2c-1a3f-4e6b-8c7d-5f2a9e1b3c04"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def documented_fields(text: str) -> dict[str, tuple[str, str]]:
    """The POST /tasks request-body table: {field: (type, required)}."""
    section = text[text.index("POST /tasks") : text.index("Example Request")]
    return {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^(\w+) \|\n(\w+) \| (Yes|No|Cond\.) \|", section, re.M)
    }


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        yield c


def test_the_definition_holds_every_documented_field() -> None:
    fields = documented_fields(TEXT)
    assert set(fields) == set(DEFINITION)
    for name, (kind, _required) in fields.items():
        python = {"string": str, "object": dict, "UUID": str, "integer": int}[kind]
        assert isinstance(DEFINITION[name], python), name


async def test_the_documented_curl_creates_a_task(
    server: ConveyorServer, keys: dict[str, str], tmp_path: Path, admin: AsyncClient
) -> None:
    [example] = curl_examples(TEXT)
    # The example posts a file the reader writes ("/path/to/your/task-definition.json"):
    # here it is written to a temporary directory, with every documented field.
    definition = tmp_path / "task-definition.json"
    definition.write_text(json.dumps(DEFINITION))
    argv = [f"@{definition}" if w == "@/path/to/your/task-definition.json" else w for w in example]
    assert argv != example
    result = await run_curl(argv, server.http_base_url, key=keys["operator"])
    assert result.status == 201, result.body
    assert result.headers["content-type"] == "application/json"
    task = result.json()
    assert list(task) == TASK_FIELDS
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", task["id"]
    )
    for key in ("title", "description", "schedule_kind", "schedule_expr", "timezone",
                "payload", "priority", "max_retries", "backoff_strategy", "dedupe_key",
                "dedupe_window_seconds", "concurrency_key"):  # fmt: skip
        assert task[key] == DEFINITION[key], key
    assert task["created_by"] == DEFINITION["created_by"]  # the agent's UUID, as sent
    assert task["status"] == "active" and task["pause_reason"] is None
    assert RFC3339.match(task["next_run_at"]) and task["last_run_at"] is None
    assert task["snoozed_until"] is None and task["snooze_reason"] is None
    assert task["run_count"] == 0
    assert RFC3339.match(task["created_at"]) and RFC3339.match(task["updated_at"])
    # In v1 it is a schedule whose runs are `pipeline` tasks with the payload as input.
    schedule = await admin.schedules.GetSchedule(
        schedule_pb2.GetScheduleRequest(name=f"projects/alpha/schedules/{task['id']}")
    )
    template = schedule.task_template
    assert template.kind == "pipeline" and template.priority == 2
    assert template.retry_policy.max_attempts == 5
    assert template.retry_policy.backoff == enums_pb2.BACKOFF_LINEAR
    assert template.dedupe_policy.window.seconds == 3600
    assert schedule.spec.timezone == "Europe/Chisinau"


async def test_defaults_and_refusals(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with rest(server.http_base_url, keys["operator"]) as http:
        minimal = {"title": "t", "schedule_kind": "cron", "schedule_expr": "* * * * *",
                   "payload": {}}  # fmt: skip
        task = (await http.post("/tasks", json=minimal)).json()
        assert task["priority"] == 5 and task["max_retries"] == 3
        assert task["backoff_strategy"] == "exponential_jitter" and task["timezone"] == "UTC"
        for body, field in (
            ({**minimal, "schedule_expr": "every tuesday"}, "schedule_expr"),
            ({**minimal, "schedule_kind": "hourly"}, "schedule_kind"),
            ({**minimal, "timezone": "Mars/Olympus"}, "timezone"),
            ({**minimal, "priority": 10}, "priority"),
            ({**minimal, "backoff_strategy": "random"}, "backoff_strategy"),
            ({**minimal, "payload": "not an object"}, "payload"),
            ({k: v for k, v in minimal.items() if k != "title"}, "title"),
        ):
            problem = assert_seed_problem(
                await http.post("/tasks", json=body), 400, "invalid_argument"
            )
            assert problem["errors"][0]["field"] == field, (body, problem)
            assert problem["allowed_actions"][0]["href"] == "/tasks"
        async with httpx.AsyncClient(base_url=server.http_base_url) as nobody:
            keyless = await nobody.post("/tasks", json=minimal)
        assert keyless.status_code == 401
    async with rest(server.http_base_url, keys["viewer"]) as viewer:
        # v1's roles: a viewer reads schedules but does not create them.
        assert (await viewer.post("/tasks", json=minimal)).status_code == 403
        assert (await viewer.get("/tasks")).status_code == 200


async def test_put_changes_only_the_fields_given(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with rest(server.http_base_url, keys["operator"]) as http:
        created = (await http.post("/tasks", json=DEFINITION)).json()
        url = f"/tasks/{created['id']}"
        changed = await http.put(url, json={"schedule_expr": "30 3 * * *", "priority": 1})
        assert changed.status_code == 200, changed.text
        after = changed.json()
        assert after["schedule_expr"] == "30 3 * * *" and after["priority"] == 1
        for key in TASK_FIELDS:
            if key not in ("schedule_expr", "priority", "next_run_at", "updated_at"):
                assert after[key] == created[key], key
        second = (await http.put(url, json={"payload": {"steps": []}, "max_retries": 0})).json()
        assert second["payload"] == {"steps": []} and second["max_retries"] == 0
        assert second["schedule_expr"] == "30 3 * * *" and second["title"] == DEFINITION["title"]
        assert (await http.get(url)).json() == second
        for body, field in (
            ({"schedule_expr": "61 * * * *"}, "schedule_expr"),
            ({"colour": "blue"}, "colour"),
            ({}, "body"),
        ):
            problem = assert_seed_problem(await http.put(url, json=body), 400, "invalid_argument")
            assert problem["errors"][0]["field"] == field, problem
        assert (await http.get(url)).json() == second  # a refused PUT changed nothing
        malformed = await http.get("/tasks/Not_An_Id")
        assert assert_seed_problem(malformed, 400, "invalid_argument")["errors"][0]["field"] == "id"
        missing = await http.put(
            "/tasks/00000000-0000-4000-8000-000000000000", json={"priority": 3}
        )
        assert_seed_problem(missing, 404, "not_found")


async def test_offset_paging_and_filters(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with (
        rest(server.http_base_url, keys["operator"]) as ops,
        rest(server.http_base_url, keys["admin"]) as adm,
    ):
        mine = [
            (await ops.post("/tasks", json={**DEFINITION, "title": f"t{i}"})).json()
            for i in range(7)
        ]
        theirs = (
            await adm.post("/tasks", json={**DEFINITION, "schedule_kind": "once",
                                           "schedule_expr": "2999-01-01T00:00:00Z",
                                           "created_by": OTHER_AGENT})
        ).json()  # fmt: skip
        every = (await ops.get("/tasks")).json()
        assert every["limit"] == 50 and every["offset"] == 0 and every["next_offset"] is None
        assert len(every["tasks"]) == 8
        ids = [t["id"] for t in every["tasks"]]
        pages = []
        offset: int | None = 0
        while offset is not None:
            page = (await ops.get("/tasks", params={"limit": 3, "offset": offset})).json()
            assert page["limit"] == 3 and page["offset"] == offset
            pages.append([t["id"] for t in page["tasks"]])
            offset = page["next_offset"]
        assert [len(p) for p in pages] == [3, 3, 2]
        assert [i for p in pages for i in p] == ids
        by_me = (await ops.get("/tasks", params={"created_by": "me"})).json()["tasks"]
        assert sorted(t["id"] for t in by_me) == sorted(t["id"] for t in mine)
        agent = mine[0]["created_by"]
        named = (await adm.get("/tasks", params={"created_by": agent})).json()["tasks"]
        assert len(named) == 7
        once = (await ops.get("/tasks", params={"schedule_kind": "once"})).json()["tasks"]
        assert [t["id"] for t in once] == [theirs["id"]]
        await ops.post(f"/tasks/{mine[0]['id']}/pause")
        paused = (await ops.get("/tasks", params={"status": "paused,canceled"})).json()["tasks"]
        assert [t["id"] for t in paused] == [mine[0]["id"]]
        for params in ({"offset": -1}, {"limit": 0}, {"status": "sleeping"}):
            assert_seed_problem(await ops.get("/tasks", params=params), 400, "invalid_argument")


async def test_created_by_is_the_agent_uuid_sent(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    """The body's created_by (the agent's UUID) is shown back and filters the list; a
    schedule made through v1 (no agent) shows, and is found by, its key's id."""
    async with rest(server.http_base_url, keys["operator"]) as http:
        agent = (await http.post("/tasks", json=DEFINITION)).json()
        other = (await http.post("/tasks", json={**DEFINITION, "created_by": OTHER_AGENT})).json()
        got = (await http.get(f"/tasks/{agent['id']}")).json()
        assert got["created_by"] == DEFINITION["created_by"]
        changed = (await http.put(f"/tasks/{agent['id']}", json={"priority": 1})).json()
        assert changed["created_by"] == DEFINITION["created_by"]  # a PUT keeps it
        found = await http.get("/tasks", params={"created_by": DEFINITION["created_by"]})
        assert [t["id"] for t in found.json()["tasks"]] == [agent["id"]]
        found = await http.get("/tasks", params={"created_by": OTHER_AGENT})
        assert [t["id"] for t in found.json()["tasks"]] == [other["id"]]
        v1 = await http.post(
            "/v1/projects/alpha/schedules",
            params={"schedule_id": "from-v1"},
            json={
                "spec": {"kind": "CRON", "expression": "0 2 * * *"},
                "task_template": {"kind": "pipeline"},
            },
        )
        assert v1.status_code == 200, v1.text
        key_id = v1.json()["created_by"].rsplit("/", 1)[-1]
        assert (await http.get("/tasks/from-v1")).json()["created_by"] == key_id
        by_key = (await http.get("/tasks", params={"created_by": key_id})).json()["tasks"]
        assert sorted(t["id"] for t in by_key) == sorted([agent["id"], other["id"], "from-v1"])
        by_me = (await http.get("/tasks", params={"created_by": "me"})).json()["tasks"]
        assert len(by_me) == 3
        problem = assert_seed_problem(
            await http.post("/tasks", json={**DEFINITION, "created_by": "agent-7"}),
            400,
            "invalid_argument",
        )
        assert problem["errors"][0]["field"] == "created_by"


async def test_snooze_pause_resume_run_now_cancel(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    async with rest(server.http_base_url, keys["operator"]) as http:
        task = (await http.post("/tasks", json=DEFINITION)).json()
        url = f"/tasks/{task['id']}"
        before = datetime.now(UTC)
        snoozed = await http.post(f"{url}/snooze", json={"delay_seconds": 3600, "reason": "deploy"})
        assert snoozed.status_code == 200, snoozed.text
        body = snoozed.json()
        until = datetime.fromisoformat(body["snoozed_until"])
        assert before + timedelta(seconds=3590) < until < before + timedelta(seconds=3700)
        assert body["snooze_reason"] == "deploy"
        for sent, field in (
            ({"delay_seconds": 7 * 86400 + 1}, "delay_seconds"),
            ({"delay_seconds": -5}, "delay_seconds"),
            ({"reason": "no delay"}, "delay_seconds"),
            ({"delay_seconds": "soon"}, "delay_seconds"),
        ):
            problem = assert_seed_problem(
                await http.post(f"{url}/snooze", json=sent), 400, "invalid_argument"
            )
            assert problem["errors"][0]["field"] == field, problem
        week = await http.post(f"{url}/snooze", json={"delay_seconds": 7 * 86400})
        assert week.status_code == 200  # the seed's "max 1 week" is allowed
        assert (await http.post(f"{url}/pause")).json()["status"] == "paused"
        assert (await http.post(f"{url}/resume")).json()["status"] == "active"
        run = await http.post(f"{url}/run_now")
        assert run.status_code == 202, run.text
        assert run.json()["task_id"] == task["id"]
        run_task = await admin.get_task(f"projects/alpha/tasks/{run.json()['run']['id']}")
        assert run_task.kind == "pipeline" and run_task.schedule.endswith(task["id"])
        assert (await http.post(f"{url}/cancel")).json()["status"] == "canceled"
        # "This action cannot be undone."
        problem = assert_seed_problem(await http.post(f"{url}/resume"), 412, "schedule_cancelled")
        # A next step, on this seed's own route: the cancelled task is read-only.
        [create] = problem["allowed_actions"]
        assert {k: create[k] for k in ("rel", "method", "href", "operation_id")} == {
            "rel": "create",
            "method": "POST",
            "href": "/tasks",
            "operation_id": "create_task",
        }
        # An unknown body field is named as sent (v1's `name` is this seed's `id`).
        unknown = assert_seed_problem(
            await http.put(url, json={"name": "x"}), 400, "invalid_argument"
        )
        assert unknown["errors"] == [{"field": "name", "description": "is not a field of a task"}]
        changed = await http.put(url, json={"title": "renamed"})
        assert assert_seed_problem(changed, 412, "schedule_cancelled")["allowed_actions"] == [
            create
        ]
        assert (await http.get(url)).json()["status"] == "canceled"


async def test_same_rows_and_audit_as_v1(
    server: ConveyorServer, keys: dict[str, str], admin: AsyncClient
) -> None:
    async with rest(server.http_base_url, keys["operator"]) as http:
        seed = (await http.post("/tasks", json=DEFINITION)).json()
        v1 = await http.post(
            "/v1/projects/alpha/schedules",
            params={"schedule_id": "from-v1"},
            json={
                "title": DEFINITION["title"],
                "description": DEFINITION["description"],
                "spec": {"kind": "CRON", "expression": "0 2 * * *", "timezone": "Europe/Chisinau"},
                "task_template": {
                    "kind": "pipeline",
                    "input": DEFINITION["payload"],
                    "priority": 2,
                    "retry_policy": {"max_attempts": 5, "backoff": "BACKOFF_LINEAR"},
                    "dedupe_policy": {"key": "nightly-report", "window": "3600s"},
                    "concurrency_key": "reports",
                    "labels": {"created_by": DEFINITION["created_by"]},
                },
            },
        )
        assert v1.status_code == 200, v1.text
        await http.post(f"/tasks/{seed['id']}/snooze", json={"delay_seconds": 60, "reason": "r"})
        await http.post(
            "/v1/projects/alpha/schedules/from-v1:snooze", json={"delay": "60s", "reason": "r"}
        )
    names = [f"projects/alpha/schedules/{seed['id']}", "projects/alpha/schedules/from-v1"]
    rows = [
        await admin.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=n)) for n in names
    ]
    for row in rows:
        for field in ("name", "create_time", "update_time", "snooze_until", "next_run_time"):
            row.ClearField(field)
    assert rows[0] == rows[1]
    page = await admin.commands.ListCommands(
        command_pb2.ListCommandsRequest(parent="projects/alpha", page_size=100)
    )
    audit: dict[str, list[Any]] = {n: [] for n in names}
    for command in reversed(page.commands):
        if command.target in audit:
            audit[command.target].append((command.verb, command.status, command.issued_by,
                                          json.dumps(dict(command.args), sort_keys=True,
                                                     default=str)))  # fmt: skip
    assert [a[0] for a in audit[names[0]]] == [
        enums_pb2.COMMAND_VERB_CREATE_SCHEDULE,
        enums_pb2.COMMAND_VERB_SNOOZE_SCHEDULE,
    ]
    assert audit[names[0]] == audit[names[1]]
