"""`conveyor tasks ...` and `conveyor worker --import ...` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor.client import AsyncClient
from conveyor.client.cli import main
from conveyor.server.app import ConveyorServer


def _env(server: ConveyorServer, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_TARGET=server.grpc_target, CONVEYOR_API_KEY=key, CONVEYOR_PROJECT="alpha")
    return env


async def _cli(
    capsys: pytest.CaptureFixture[str], server: ConveyorServer, key: str, *argv: str
) -> tuple[int, str, str]:
    # The blocking CLI runs in a thread: the server shares this event loop.
    base = ["--target", server.grpc_target, "--key", key]
    code = await asyncio.to_thread(main, [*base, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _conveyor() -> list[str]:
    script = Path(sys.executable).parent / "conveyor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "conveyor.client.cli"]


async def test_tasks_create_get_list_cancel(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    op = keys["operator"]
    code, out, err = await _cli(
        capsys,
        server,
        op,
        "tasks",
        "create",
        "email.send",
        "--input",
        '{"to": "ada@example.com", "n": 2}',
        "--queue",
        "emails",
        "--label",
        "team=core",
    )
    assert code == 0, err
    created = json.loads(out)
    # The project defaults to the key's own (alpha); integers stay integers.
    assert created["name"].startswith("projects/alpha/tasks/")
    assert created["kind"] == "email.send" and created["queue"] == "emails"
    assert created["input"] == {"to": "ada@example.com", "n": 2}
    assert created["labels"] == {"team": "core"}
    short_id = created["name"].rsplit("/", 1)[1]

    code, out, _ = await _cli(capsys, server, op, "tasks", "get", short_id)
    assert code == 0 and json.loads(out)["name"] == created["name"]

    await _cli(capsys, server, op, "tasks", "create", "other")
    code, out, _ = await _cli(capsys, server, op, "tasks", "list", "--queue", "emails")
    assert [t["name"] for t in json.loads(out)] == [created["name"]]
    # Global options after the subcommand, -o anywhere; lists are one JSON array.
    code, out, _ = await _cli(capsys, server, op, "tasks", "list", "-o", "json", "-p", "alpha")
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = await _cli(capsys, server, op, "tasks", "list", "--state", "running")
    assert code == 0 and json.loads(out) == []
    code, out, _ = await _cli(capsys, server, op, "-o", "yaml", "tasks", "list", "--limit", "1")
    assert code == 0 and out.startswith("- name: projects/alpha/tasks/")
    code, out, _ = await _cli(capsys, server, op, "tasks", "list", "-o", "name")
    assert code == 0 and out.split() == sorted(out.split())
    assert created["name"] in out.split() and len(out.split()) == 2
    code, out, _ = await _cli(capsys, server, op, "tasks", "list", "-o", "wide")
    assert code == 0 and "BLOCKED" in out and "email.send" in out

    code, out, _ = await _cli(
        capsys, server, op, "tasks", "cancel", created["name"], "--reason", "oops"
    )
    assert code == 0 and json.loads(out)["state"] == "TASK_STATE_CANCELLED"
    code, _, err = await _cli(capsys, server, op, "tasks", "cancel", created["name"])
    assert code == 1 and "FAILED_PRECONDITION" in err


async def test_bad_input_is_refused_with_clear_messages(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    op = keys["operator"]
    code, _, err = await _cli(capsys, server, op, "tasks", "list", "--state", "bogus")
    assert code == 2
    assert "'bogus' is not a state" in err and "queued" in err and "succeeded" in err
    code, _, err = await _cli(capsys, server, op, "tasks", "list", "--limit", "-5")
    assert code == 2 and "--limit" in err and "-5" in err
    code, _, err = await _cli(capsys, server, op, "tasks", "get", "does-not-exist")
    assert code == 2 and "is not a task" in err and "UUID" in err
    code, _, err = await _cli(capsys, server, op, "tasks", "create", "k", "--input", "{nope")
    assert code == 2 and "is not JSON" in err
    # A server-side refusal names the field, as REST does.
    code, _, err = await _cli(capsys, server, op, "tasks", "create", "k", "--queue", "Bad Queue!")
    assert code == 1 and "INVALID_ARGUMENT" in err and "task.queue" in err


async def test_missing_and_invalid_keys_say_where_they_were_looked_for(
    server: ConveyorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    empty = tmp_path / "empty"
    process = await asyncio.create_subprocess_exec(
        *_conveyor(),
        "tasks",
        "list",
        "--target",
        server.grpc_target,
        "--data-dir",
        str(empty),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, raw = await process.communicate()
    assert process.returncode == 2
    message = raw.decode()
    assert "no API key" in message and "--key" in message and "CONVEYOR_API_KEY" in message
    assert str(empty / "admin.key") in message

    code, _, err = await _cli(capsys, server, "cv_bogus_key", "tasks", "list", "-p", "alpha")
    assert code == 1 and "UNAUTHENTICATED" in err and "--key" in err


async def test_get_wait_exit_codes_follow_the_outcome(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    op = keys["operator"]
    async with AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as worker:
        names = {}
        for outcome in ("ok", "bad", "gone"):
            code, out, _ = await _cli(capsys, server, op, "tasks", "create", outcome)
            names[outcome] = json.loads(out)["name"]
        leases = {
            lease.task.kind: lease
            for lease in await worker.lease_tasks(["default"], worker="w1", max_tasks=3)
        }
        await worker.complete_task(names["ok"], leases["ok"].lease_id, {"n": 1})
        await worker.fail_task(
            names["bad"], leases["bad"].lease_id, message="boom", retryable=False
        )
        code, out, err = await _cli(capsys, server, op, "tasks", "get", names["ok"], "--wait", "5")
        assert code == 0 and json.loads(out)["result"] == {"n": 1}
        assert "SUCCEEDED" in err  # the state, as it changed
        code, out, _ = await _cli(capsys, server, op, "tasks", "get", names["bad"], "--wait")
        assert code == 3 and json.loads(out)["state"] == "TASK_STATE_FAILED"
        # Still running after the timeout: 124.
        code, out, err = await _cli(
            capsys, server, op, "tasks", "get", names["gone"], "--wait", "0.2"
        )
        assert code == 124 and "RUNNING" in err
        await _cli(capsys, server, op, "tasks", "cancel", names["gone"])
        await worker.fail_task(names["gone"], leases["gone"].lease_id, message="stopped")
        code, out, _ = await _cli(capsys, server, op, "tasks", "get", names["gone"], "--wait", "5")
        assert code in (4, 5) and json.loads(out)["state"] in (
            "TASK_STATE_CANCELLED",
            "TASK_STATE_INTERRUPTED",
        )
        code, out, _ = await _cli(capsys, server, op, "tasks", "create", "queued.only")
        queued = json.loads(out)["name"]
        await _cli(capsys, server, op, "tasks", "cancel", queued)
        code, out, _ = await _cli(capsys, server, op, "tasks", "get", queued, "--wait", "5")
        assert code == 4


async def test_ctrl_c_exits_130_and_a_closed_pipe_ends_quietly(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    op = keys["operator"]
    _code, out, _ = await _cli(capsys, server, op, "tasks", "create", "never.runs")
    name = json.loads(out)["name"]
    process = await asyncio.create_subprocess_exec(
        *_conveyor(),
        "tasks",
        "get",
        name,
        "--wait",
        "60",
        env=_env(server, op),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    # The first state line says the wait has begun.
    line = await asyncio.wait_for(process.stderr.readline(), 30)
    assert b"QUEUED" in line
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130
    assert b"Traceback" not in err

    for _ in range(30):
        await _cli(capsys, server, op, "tasks", "create", "many")
    # `conveyor events watch | head -n 2`: the watch never ends by itself.
    read, write = os.pipe()
    watch = await asyncio.create_subprocess_exec(
        *_conveyor(),
        "events",
        "watch",
        "--after",
        "1",
        env=_env(server, op),
        stdout=write,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write)
    head = await asyncio.create_subprocess_exec(
        "head", "-n", "2", stdin=read, stdout=asyncio.subprocess.PIPE
    )
    os.close(read)
    lines, _ = await asyncio.wait_for(head.communicate(), 30)
    assert len(lines.splitlines()) == 2
    assert all(json.loads(line)["id"] for line in lines.splitlines())  # NDJSON
    # The next event written finds the pipe closed: the watch ends quietly.
    await _cli(capsys, server, op, "tasks", "create", "wake.up")
    _, err = await asyncio.wait_for(watch.communicate(), 30)
    assert watch.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipe" not in err

    # Ctrl-C in the middle of a stream: 130, no traceback.
    streaming = await asyncio.create_subprocess_exec(
        *_conveyor(), "events", "watch", "--after", "1", env=_env(server, op),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert streaming.stdout is not None
    assert json.loads(await asyncio.wait_for(streaming.stdout.readline(), 30))["id"]
    streaming.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(streaming.communicate(), 30)
    assert streaming.returncode == 130
    assert b"Traceback" not in err


async def test_worker_command_runs_imported_handlers_and_logs_each_task(
    server: ConveyorServer,
    keys: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "tasks.py").write_text(
        textwrap.dedent(
            """
            from conveyor.client import PermanentError, task

            @task("greet")
            def greet(ctx):
                ctx.set_summary("greeted")
                return {"hello": ctx.input["name"]}

            @task("explode")
            def explode(ctx):
                raise PermanentError("kaboom")
            """
        )
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *_conveyor(),
            "worker",
            "--import",
            "tasks",
            "--queues",
            "default,greetings",
            "--concurrency",
            "2",
            "--worker-id",
            "cli-worker",
            cwd=tmp_path,
            env=_env(server, keys["worker"]),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            # The README's tour: enqueue with the CLI, read the result back with it.
            code, out, err = await _cli(
                capsys,
                server,
                keys["operator"],
                "tasks",
                "create",
                "greet",
                "--queue",
                "greetings",
                "--input",
                '{"name": "Ada"}',
            )
            assert code == 0, err
            name = json.loads(out)["name"]
            code, out, err = await _cli(
                capsys, server, keys["viewer"], "tasks", "get", name, "--wait", "30"
            )
            assert code == 0, f"{err}\n{log.read_text()}"
            done = json.loads(out)
            assert done["state"] == "TASK_STATE_SUCCEEDED"
            assert done["result"] == {"hello": "Ada"}
            assert done["summary"] == "greeted"
            assert done["worker"] == "projects/alpha/workers/cli-worker"

            code, out, _ = await _cli(
                capsys, server, keys["operator"], "tasks", "create", "explode"
            )
            failing = json.loads(out)["name"]
            code, _, _ = await _cli(
                capsys, server, keys["viewer"], "tasks", "get", failing, "--wait", "30"
            )
            assert code == 3

            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 15)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = log.read_text()
    assert code == 0, text
    assert "cli-worker stopped" in text
    assert f"task {name} (greet) attempt 1 started" in text
    assert f"task {name} (greet) succeeded in " in text
    assert f"task {failing} (explode) failed in " in text
    # The handler's exception, with its traceback.
    assert "Traceback (most recent call last)" in text and "PermanentError: kaboom" in text


def test_worker_command_refuses_modules_without_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command puts the working directory on sys.path, as `python -m` does.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["worker", "--import", "textwrap"]) == 2
    assert "registered no @task handlers" in capsys.readouterr().err
