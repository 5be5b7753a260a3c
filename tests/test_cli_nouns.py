"""Every noun of the CLI against a real server: queues, workers, schedules, events,
audit, projects, keys, webhooks, and the task verbs beyond create/get/list/cancel."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import AsyncClient
from conveyor.client.cli import main
from conveyor.server.app import ConveyorServer


async def _cli(
    capsys: pytest.CaptureFixture[str], server: ConveyorServer, key: str, *argv: str
) -> tuple[int, str, str]:
    base = ["--target", server.grpc_target, "--key", key, "-o", "json"]
    code = await asyncio.to_thread(main, [*base, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def _json(
    capsys: pytest.CaptureFixture[str], server: ConveyorServer, key: str, *argv: str
) -> Any:
    code, out, err = await _cli(capsys, server, key, *argv)
    assert code == 0, err
    return json.loads(out)


def _conveyor() -> list[str]:
    script = Path(sys.executable).parent / "conveyor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "conveyor.client.cli"]


async def test_task_verbs(
    server: ConveyorServer,
    keys: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    op = keys["operator"]
    gated = await _json(
        capsys,
        server,
        op,
        "tasks",
        "create",
        "deploy",
        "--requires-approval",
        "--label",
        "env=prod",
    )
    assert gated["state"] == "TASK_STATE_AWAITING_APPROVAL"
    approved = await _json(capsys, server, op, "tasks", "approve", gated["name"], "--comment", "ok")
    assert approved["approval"]["approved"] and approved["approval"]["comment"] == "ok"
    other = await _json(capsys, server, op, "tasks", "create", "deploy", "--requires-approval")
    rejected = await _json(capsys, server, op, "tasks", "reject", other["name"], "--reason", "no")
    assert rejected["state"] == "TASK_STATE_CANCELLED"

    parent = await _json(capsys, server, op, "tasks", "create", "parent")
    child = await _json(
        capsys, server, op, "tasks", "create", "child", "--parent-task", parent["name"]
    )
    tree = await _json(capsys, server, op, "tasks", "tree", child["name"])
    assert [t["name"] for t in tree] == [parent["name"], child["name"]]

    # Export: the file, and the rows written on stderr.
    out = tmp_path / "tasks.csv"
    code, _, err = await _cli(
        capsys, server, op, "tasks", "export", "--kind", "deploy", "--field", "name",
        "--field", "state", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["name", "state"] and len(rows) == 3
    assert f"exported 2 rows to {out}" in err
    code, text, _ = await _cli(capsys, server, op, "tasks", "export", "--format", "ndjson")
    assert code == 0 and len(text.splitlines()) == 4

    # Retry a cancelled task; the command is followed until it settles.
    code, out_text, err = await _cli(capsys, server, op, "tasks", "retry", rejected["name"])
    assert code == 0, err
    command = json.loads(out_text)
    assert command["verb"] == "COMMAND_VERB_RETRY_TASK"
    assert command["status"] == "COMMAND_STATUS_SUCCEEDED" and "SUCCEEDED" in err
    code, _, err = await _cli(capsys, server, op, "tasks", "retry")
    assert code == 2 and "--all" in err
    batch = await _json(
        capsys, server, op, "tasks", "retry", "--all", "--state", "cancelled", "--max", "10"
    )
    assert batch["verb"] == "COMMAND_VERB_BATCH_RETRY_TASKS"

    # Delete finished tasks by filter.
    await _json(capsys, server, op, "tasks", "cancel", parent["name"])
    deleted = await _json(capsys, server, keys["admin"], "tasks", "delete", "--kind", "parent")
    assert deleted["deleted_count"] == 1
    code, _, err = await _cli(capsys, server, op, "tasks", "delete")
    assert code == 2 and "filter" in err

    # Watch one task until it ends: its events so far, then live ones, as NDJSON; it
    # stops by itself. A subprocess, so that a watch that never ends fails the test
    # rather than hanging the event loop's thread pool.
    waiting = await _json(capsys, server, op, "tasks", "create", "watched")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_TARGET=server.grpc_target, CONVEYOR_API_KEY=op)
    watcher = await asyncio.create_subprocess_exec(
        *_conveyor(), "tasks", "watch", waiting["name"], env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        first = json.loads(await asyncio.wait_for(watcher.stdout.readline(), 30))
        assert first["type"] == "task.created"
        await _json(capsys, server, op, "tasks", "cancel", waiting["name"])
        rest, watch_err = await asyncio.wait_for(watcher.communicate(), 30)
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
    assert watcher.returncode == 0, watch_err
    last = json.loads(rest.splitlines()[-1])
    assert last["type"] == "task.cancelled"
    assert last["task"]["state"] == "TASK_STATE_CANCELLED"


async def test_queues(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = keys["admin"]
    for _ in range(3):
        await _json(capsys, server, admin, "tasks", "create", "job", "--queue", "mail")
    listed = await _json(capsys, server, admin, "queues", "list")
    assert [q["name"] for q in listed] == ["projects/alpha/queues/mail"]
    assert listed[0]["stats"]["queued"] == "3"
    updated = await _json(
        capsys, server, admin, "queues", "update", "mail", "--max-concurrency", "5"
    )
    assert updated["max_concurrency"] == 5
    paused = await _json(capsys, server, admin, "queues", "pause", "mail", "--reason", "db work")
    assert paused["paused"] and paused["pause_reason"] == "db work"
    assert not (await _json(capsys, server, admin, "queues", "resume", "mail"))["paused"]
    # Not on a terminal and without --yes: refused, naming the depth.
    code, _, err = await _cli(capsys, server, admin, "queues", "purge", "mail")
    assert code == 2 and "3 queued tasks" in err and "--yes" in err
    code, out, err = await _cli(capsys, server, admin, "queues", "purge", "mail", "--yes")
    assert code == 0, err
    assert json.loads(out)["result"] == {"purged": 3}
    assert "SUCCEEDED" in err
    assert (await _json(capsys, server, admin, "queues", "get", "mail"))["stats"]["queued"] == "0"
    code, _, err = await _cli(capsys, server, admin, "queues", "update", "mail")
    assert code == 2


async def test_workers_and_their_commands(
    server: ConveyorServer,
    keys: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin = keys["admin"]
    (tmp_path / "handlers.py").write_text(
        textwrap.dedent(
            """
            from conveyor.client import task

            @task("noop")
            def noop(ctx):
                return None
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_TARGET=server.grpc_target, CONVEYOR_API_KEY=keys["worker"])
    process = await asyncio.create_subprocess_exec(
        *_conveyor(), "worker", "--import", "handlers", "--worker-id", "w-cli",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with AsyncClient(server.grpc_target, api_key=admin, project="alpha") as client:
            for _ in range(300):
                workers = [w async for w in client.list_workers()]
                if workers:
                    break
                await asyncio.sleep(0.1)
        listed = await _json(capsys, server, admin, "workers", "list")
        assert [w["name"] for w in listed] == ["projects/alpha/workers/w-cli"]
        assert (await _json(capsys, server, admin, "workers", "get", "w-cli"))["capacity"] == 1
        code, out, err = await _cli(
            capsys, server, admin, "workers", "resize", "w-cli", "--delta", "2"
        )
        assert code == 0, err
        assert json.loads(out)["status"] == "COMMAND_STATUS_SUCCEEDED"
        assert "ISSUED" in err or "DISPATCHED" in err  # the progress, as it went
        consumed = await _json(capsys, server, admin, "workers", "consume", "w-cli", "extra")
        assert consumed["status"] == "COMMAND_STATUS_SUCCEEDED"
        stopped = await _json(capsys, server, admin, "workers", "stop-consuming", "w-cli", "extra")
        assert stopped["status"] == "COMMAND_STATUS_SUCCEEDED"
        limited = await _json(
            capsys, server, admin, "workers", "rate-limit", "noop", "5/s", "--no-wait"
        )
        assert limited["verb"] == "COMMAND_VERB_SET_RATE_LIMIT"
        restarted = await _json(capsys, server, admin, "workers", "restart", "w-cli")
        assert restarted["status"] == "COMMAND_STATUS_SUCCEEDED"
    finally:
        process.terminate()
        await process.wait()


async def test_schedules(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    op = keys["operator"]
    created = await _json(
        capsys, server, op, "schedules", "create", "nightly", "--cron", "30 2 * * *",
        "--timezone", "America/New_York", "--task-kind", "report.build", "--queue", "reports",
        "--input", '{"scope": "daily"}', "--title", "Nightly report",
    )  # fmt: skip
    assert created["name"] == "projects/alpha/schedules/nightly"
    assert created["task_template"]["input"] == {"scope": "daily"}
    preview = await _json(
        capsys, server, op, "schedules", "preview", "nightly", "--count", "3",
        "--start", "2030-11-24T00:00:00Z",
    )  # fmt: skip
    assert preview["fire_times"] == [
        "2030-11-24T07:30:00Z",
        "2030-11-25T07:30:00Z",
        "2030-11-26T07:30:00Z",
    ]
    spec_only = await _json(
        capsys, server, op, "schedules", "preview", "--cron", "0 * * * *", "--count", "2",
        "--start", "2030-11-24T00:10:00Z",
    )  # fmt: skip
    assert spec_only["fire_times"] == ["2030-11-24T01:00:00Z", "2030-11-24T02:00:00Z"]
    updated = await _json(capsys, server, op, "schedules", "update", "nightly", "--title", "New")
    # Only the field given changed.
    assert updated["title"] == "New" and updated["spec"]["expression"] == "30 2 * * *"
    paused = await _json(capsys, server, op, "schedules", "pause", "nightly", "--notes", "wait")
    assert paused["state"] == "SCHEDULE_STATE_PAUSED" and paused["notes"] == "wait"
    resumed = await _json(capsys, server, op, "schedules", "resume", "nightly")
    assert resumed["state"] == "SCHEDULE_STATE_ACTIVE"
    snoozed = await _json(capsys, server, op, "schedules", "snooze", "nightly", "--for", "2h")
    assert snoozed["snooze_until"]
    task = await _json(capsys, server, op, "schedules", "run", "nightly")
    assert task["kind"] == "report.build" and task["queue"] == "reports"
    listed = await _json(capsys, server, op, "schedules", "list")
    assert [s["name"] for s in listed] == [created["name"]]
    cancelled = await _json(capsys, server, op, "schedules", "cancel", "nightly")
    assert cancelled["state"] == "SCHEDULE_STATE_CANCELLED"
    assert await _json(capsys, server, op, "schedules", "delete", "nightly") == {
        "deleted": created["name"]
    }
    code, _, err = await _cli(capsys, server, op, "schedules", "create", "x", "--cron", "* * * * *")
    assert code == 2 and "--task-kind" in err
    code, _, err = await _cli(
        capsys, server, op, "schedules", "create", "x", "--task-kind", "k",
        "--cron", "* * * * *", "--overlap", "sometimes",
    )  # fmt: skip
    assert code == 2 and "skip" in err and "allow_all" in err


async def test_events_audit_projects_keys_webhooks(
    server: ConveyorServer,
    keys: dict[str, str],
    admin_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    op, admin = keys["operator"], keys["admin"]
    published = await _json(
        capsys, server, op, "events", "publish", "deploy.done", "--data", '{"version": 7}'
    )
    assert published["type"] == "deploy.done" and published["data"] == {"version": 7}
    listed = await _json(capsys, server, op, "events", "list", "--type", "deploy.*")
    assert [e["id"] for e in listed] == [published["id"]]
    code, _, err = await _cli(capsys, server, op, "events", "publish", "x.y", "--data", "[1]")
    assert code == 2 and "JSON object" in err

    await _json(capsys, server, admin, "queues", "pause", "default")
    commands = await _json(capsys, server, admin, "audit", "list", "--verb", "pause_queue")
    assert [c["verb"] for c in commands] == ["COMMAND_VERB_PAUSE_QUEUE"]
    one = await _json(capsys, server, admin, "audit", "get", commands[0]["sequence"])
    assert one["name"] == commands[0]["name"]
    verified = await _json(capsys, server, admin, "audit", "verify")
    assert verified["ok"] is True

    # The bootstrap key creates projects; its own project is `default`.
    made = await _json(capsys, server, admin_key, "projects", "create", "gamma")
    assert made["name"] == "projects/gamma"
    assert (await _json(capsys, server, admin_key, "projects", "get"))["name"] == "projects/default"
    names = [p["name"] for p in await _json(capsys, server, admin_key, "projects", "list")]
    assert {"projects/alpha", "projects/gamma"} <= set(names)
    updated = await _json(
        capsys, server, admin, "projects", "update", "--display-name", "Alpha Inc"
    )
    assert updated["name"] == "projects/alpha" and updated["display_name"] == "Alpha Inc"

    key = await _json(capsys, server, admin, "keys", "create", "--role", "viewer")
    assert key["role"] == "ROLE_VIEWER" and key["secret"]
    listed_keys = await _json(capsys, server, admin, "keys", "list")
    assert key["name"] in [k["name"] for k in listed_keys]
    assert await _json(capsys, server, admin, "keys", "delete", key["name"]) == {
        "deleted": key["name"]
    }
    code, _, err = await _cli(capsys, server, admin, "keys", "create", "--role", "king")
    assert code == 2 and "viewer" in err

    secret = await _json(capsys, server, admin, "webhooks", "secret")
    rotated = await _json(capsys, server, admin, "webhooks", "rotate", "--grace", "1h")
    assert rotated["secret"] != secret["secret"]
    assert rotated["previous_secret"] == secret["secret"]
    assert await _json(capsys, server, admin, "webhooks", "deliveries") == []

    # A viewer is refused, with the server's words.
    code, _, err = await _cli(capsys, server, keys["viewer"], "keys", "list")
    assert code == 1 and "PERMISSION_DENIED" in err


async def test_health_version_and_table_output(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, ["health", "--target", server.grpc_target])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["status"] == "SERVING"
    assert await asyncio.to_thread(main, ["serve", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: conveyor serve")
    assert await asyncio.to_thread(main, ["version", "-o", "yaml"]) == 0
    assert capsys.readouterr().out.startswith("conveyor: ")
    await _json(capsys, server, keys["operator"], "tasks", "create", "table.me")
    code = await asyncio.to_thread(
        main, ["-o", "table", "tasks", "list", "--target", server.grpc_target,
               "--key", keys["viewer"]],
    )  # fmt: skip
    out, _ = capsys.readouterr()
    header, row = out.splitlines()
    assert header.split()[:4] == ["ID", "KIND", "QUEUE", "STATE"]
    assert "table.me" in row and "QUEUED" in row


def test_no_parameter_shadows_a_global_option() -> None:
    # An argument named like a global option (project, key) would be overwritten by it.
    import click

    from conveyor.client.cli._main import cli

    def walk(command: click.Command, path: str) -> list[str]:
        names = [p.name for p in command.params]
        clashes = [f"{path}: {n}" for n in set(names) if n and names.count(n) > 1]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                clashes += walk(sub, f"{path} {name}")
        return clashes

    assert walk(cli, "conveyor") == []
