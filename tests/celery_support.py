"""Shared by the Celery brain tests (seed 001): its text, its documented bodies, and
tasks that ran and failed."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
from compat_support import seed_text  # type: ignore[import-not-found]

from conveyor.client import AsyncClient

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
