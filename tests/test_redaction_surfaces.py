"""Redaction of task input (#21 point 3) where tasks leave as HTTP: REST reads, SSE,
exports (CSV, NDJSON, XLSX), webhooks (the project's choice) and the dashboard, whose
retry keeps the stored input."""

from __future__ import annotations

import asyncio
import csv
import html as html_lib
import io
import json
import re
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2, json_format
from test_redaction import INPUT, PROJECT, SEEN_BY_VIEWER, set_project_paths, set_queue_paths  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.server.settings import Settings
from conveyor.v1 import enums_pb2, project_pb2, task_pb2

SECRETS = ("ada@example.com", "hunter2", "4111111111111111", "p1")


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    return server_settings.replace(webhook_allow=("127.0.0.1/32",))


@pytest_asyncio.fixture
async def clients(
    server: ConveyorServer, keys: dict[str, str]
) -> AsyncIterator[dict[str, AsyncClient]]:
    opened = {
        role: AsyncClient(server.grpc_target, api_key=secret, project="alpha")
        for role, secret in keys.items()
    }
    try:
        yield opened
    finally:
        for client in opened.values():
            await client.close()


@pytest_asyncio.fixture
async def secret_task(clients: dict[str, AsyncClient]) -> task_pb2.Task:
    await set_project_paths(clients["admin"], ["password", "/card/number"])
    await set_queue_paths(clients["operator"], "mail", ["/to"])
    return await clients["operator"].create_task("email.send", INPUT, queue="mail")


def rest(server: ConveyorServer, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.http_base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


async def test_rest_reads_and_sse(
    server: ConveyorServer, keys: dict[str, str], secret_task: task_pb2.Task
) -> None:
    for role, want in (("viewer", SEEN_BY_VIEWER), ("operator", INPUT), ("worker", INPUT)):
        async with rest(server, keys[role]) as http:
            got = await http.get(f"/v1/{secret_task.name}")
            assert got.status_code == 200, got.text
            assert got.json()["input"] == want, role
            listed = await http.get(f"/v1/{PROJECT}/tasks")
            assert [t["input"] for t in listed.json()["tasks"]] == [want], role
            events = await http.get(f"/v1/{PROJECT}/events")
            first = next(e for e in events.json()["events"] if "task" in e)
            assert first["task"]["input"] == want, role
            # SSE, replayed from just before the task's first event.
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(int(first["id"]) - 1)}
            async with http.stream("GET", f"/v1/{PROJECT}/events:watch", headers=headers) as stream:
                assert stream.status_code == 200
                data = await _first_sse_data(stream)
            assert data["task"]["name"] == secret_task.name
            assert data["task"]["input"] == want, role


async def test_rest_sets_paths_by_json_keys_and_refuses_bad_ones(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with rest(server, keys["admin"]) as http:
        await http.post("/v1/projects/alpha/tasks", json={"kind": "k", "queue": "mail"})
        queue = await http.patch(
            f"/v1/{PROJECT}/queues/mail", json={"redactPaths": ["/to", "token"]}
        )
        assert queue.status_code == 200, queue.text
        assert queue.json()["redact_paths"] == ["/to", "token"]
        assert queue.json()["max_concurrency"] == 0  # only the key sent changed
        bad = await http.patch(f"/v1/{PROJECT}", json={"redactPaths": ["ok", "a/b"]})
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in bad.json()["errors"]] == ["project.redact_paths[1]"]
        project = await http.get(f"/v1/{PROJECT}")
        assert project.json().get("redact_paths", []) == []
        both = await http.patch(
            f"/v1/{PROJECT}", json={"redactPaths": ["password"], "webhookFullInput": True}
        )
        assert both.status_code == 200, both.text
        assert (both.json()["redact_paths"], both.json()["webhook_full_input"]) == (
            ["password"],
            True,
        )


async def _first_sse_data(stream: httpx.Response) -> Any:
    async for line in stream.aiter_lines():
        if line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            if data.get("task"):
                return data
    raise AssertionError("the stream ended")


async def test_exports_in_every_format(
    server: ConveyorServer, keys: dict[str, str], secret_task: task_pb2.Task
) -> None:
    url = f"/v1/{PROJECT}/tasks:export"
    for role, want in (("viewer", SEEN_BY_VIEWER), ("operator", INPUT)):
        async with rest(server, keys[role]) as http:
            as_csv = await http.get(url, params=[("fields", "name"), ("fields", "input")])
            assert as_csv.status_code == 200, as_csv.text
            rows = list(csv.reader(io.StringIO(as_csv.text)))
            assert [json.loads(row[1]) for row in rows[1:]] == [want], role
            ndjson = await http.get(
                url, params={"format": "EXPORT_FORMAT_NDJSON", "fields": "input"}
            )
            assert [json.loads(line)["input"] for line in ndjson.text.splitlines()] == [want]
            xlsx = await http.get(url, params={"format": "EXPORT_FORMAT_XLSX", "fields": "input"})
            assert xlsx.status_code == 200
            text = _xlsx_text(xlsx.content)
            for secret in SECRETS:
                assert (secret in text) == (role == "operator"), (role, secret)
            assert ("&lt;redacted&gt;" in text) == (role == "viewer")


def _xlsx_text(content: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(content)) as book:
        return "".join(book.read(name).decode() for name in book.namelist())


@pytest.fixture
def received() -> Iterator[tuple[str, list[bytes], threading.Condition]]:
    bodies: list[bytes] = []
    arrived = threading.Condition()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with arrived:
                bodies.append(body)
                arrived.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", bodies, arrived
    httpd.shutdown()
    httpd.server_close()


async def test_webhooks_are_redacted_unless_the_project_chose_the_full_input(
    clients: dict[str, AsyncClient],
    secret_task: task_pb2.Task,
    received: tuple[str, list[bytes], threading.Condition],
) -> None:
    url, bodies, arrived = received
    ops, admin = clients["operator"], clients["admin"]

    async def delivered(count: int) -> dict[str, Any]:
        def wait() -> bytes:
            with arrived:
                assert arrived.wait_for(lambda: len(bodies) >= count, 20)
                return bodies[count - 1]

        return json.loads(await asyncio.to_thread(wait))  # type: ignore[no-any-return]

    first = await ops.create_task("email.send", INPUT, queue="mail", callback_url=url)
    await ops.cancel_task(first.name, "done")
    payload = await delivered(1)
    assert payload["task"]["name"] == first.name
    assert payload["task"]["input"] == SEEN_BY_VIEWER  # the default: redacted

    project = await admin.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name=PROJECT, webhook_full_input=True),
            update_mask=field_mask_pb2.FieldMask(paths=["webhook_full_input"]),
        )
    )
    assert project.webhook_full_input
    second = await ops.create_task("email.send", INPUT, queue="mail", callback_url=url)
    await ops.cancel_task(second.name, "done")
    payload = await delivered(2)
    assert payload["task"]["name"] == second.name
    assert payload["task"]["input"] == INPUT


async def signed_in(server: ConveyorServer, key: str) -> httpx.AsyncClient:
    """An HTTP client holding a dashboard session opened with `key`."""
    http = httpx.AsyncClient(base_url=server.http_base_url, timeout=10)
    form = await http.get("/ui/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    signed = await http.post("/ui/sign-in", data={"csrf": token.group(1), "api_key": key})
    assert signed.status_code == 303, signed.text
    return http


def page_input(html: str) -> Any:
    shown = re.search(r'<pre class="json">(.*?)</pre>', html, re.DOTALL)
    assert shown is not None
    return json.loads(html_lib.unescape(shown.group(1)))


async def test_the_dashboard_shows_a_viewer_the_redacted_input_and_its_retry_keeps_it(
    server: ConveyorServer,
    keys: dict[str, str],
    clients: dict[str, AsyncClient],
    secret_task: task_pb2.Task,
) -> None:
    page = f"/ui/tasks/{secret_task.name.rsplit('/', 1)[-1]}"
    viewer = await signed_in(server, keys["viewer"])
    operator = await signed_in(server, keys["operator"])
    try:
        seen = await viewer.get(page)
        assert seen.status_code == 200
        assert page_input(seen.text) == SEEN_BY_VIEWER
        assert not any(secret in seen.text for secret in SECRETS)
        listed = await viewer.get("/ui/tasks")
        assert not any(secret in listed.text for secret in SECRETS)

        await clients["operator"].cancel_task(secret_task.name, "stop")
        shown = await operator.get(page)
        assert page_input(shown.text) == INPUT
        token = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert token is not None
        retried = await operator.post(
            f"{page}/retry", data={"csrf": token.group(1), "override_input": ""}
        )
        assert retried.status_code == 303, retried.text
    finally:
        await viewer.aclose()
        await operator.aclose()
    task = await clients["operator"].get_task(secret_task.name)
    assert task.state == enums_pb2.TASK_STATE_QUEUED
    assert json_format.MessageToDict(task.input) == INPUT


async def test_a_seed_api_reads_through_the_same_rule(
    server: ConveyorServer, keys: dict[str, str], clients: dict[str, AsyncClient]
) -> None:
    await set_project_paths(clients["admin"], ["/text", "instructions"])
    secret = {"text": "deploy with token s3cr3t", "instructions": "use s3cr3t", "workdir": "/w"}
    async with rest(server, keys["operator"]) as ops:
        created = await ops.post("/api/enrai/tasks", json=secret)
        assert created.status_code == 200, created.text
        task_id = created.json()["id"]
        assert created.json()["text"] == secret["text"]
    for role in ("viewer", "operator"):
        async with rest(server, keys[role]) as http:
            state = await http.get("/api/enrai/tasks")
            assert state.status_code == 200, state.text
            body = state.json()
            # "active" is the one running task (or null), the others are lists.
            listed = [body["active"] or {}, *body["queued"], *body["completed"]]
            [shown] = [t for t in listed if t.get("id") == task_id]
            if role == "viewer":
                assert (shown["text"], shown["instructions"]) == ("<redacted>", "<redacted>")
                assert "s3cr3t" not in state.text
            else:
                assert (shown["text"], shown["instructions"]) == (
                    secret["text"],
                    secret["instructions"],
                )
            assert shown["workdir"] == "/w"
