"""`conveyor tasks ...` and `conveyor worker --import ...` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

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
    base = ["--target", server.grpc_target, "--api-key", key]
    code = await asyncio.to_thread(main, [*base, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _objects(text: str) -> list[dict[str, Any]]:
    decoder, objects, index = json.JSONDecoder(), [], 0
    while index < len(text.rstrip()):
        while text[index].isspace():
            index += 1
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)
    return objects


async def test_tasks_create_get_list_cancel(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    op = keys["operator"]
    code, out, _ = await _cli(
        capsys,
        server,
        op,
        "tasks",
        "create",
        "email.send",
        "--project",
        "alpha",
        "--input",
        '{"to": "ada@example.com"}',
        "--queue",
        "emails",
        "--label",
        "team=core",
    )
    assert code == 0
    created = json.loads(out)
    assert created["kind"] == "email.send" and created["queue"] == "emails"
    assert created["input"] == {"to": "ada@example.com"}
    assert created["labels"] == {"team": "core"}
    short_id = created["name"].rsplit("/", 1)[1]

    code, out, _ = await _cli(capsys, server, op, "tasks", "get", short_id, "--project", "alpha")
    assert code == 0 and json.loads(out)["name"] == created["name"]

    await _cli(capsys, server, op, "tasks", "create", "other", "--project", "alpha")
    code, out, _ = await _cli(
        capsys, server, op, "tasks", "list", "--project", "alpha", "--queue", "emails"
    )
    assert [t["name"] for t in _objects(out)] == [created["name"]]
    code, out, _ = await _cli(capsys, server, op, "tasks", "list", "--project", "alpha")
    assert len(_objects(out)) == 2
    code, out, _ = await _cli(
        capsys, server, op, "tasks", "list", "--project", "alpha", "--state", "running"
    )
    assert code == 0 and out == ""

    code, out, _ = await _cli(
        capsys, server, op, "tasks", "cancel", created["name"], "--reason", "oops"
    )
    assert code == 0 and json.loads(out)["state"] == "TASK_STATE_CANCELLED"

    code, _, err = await _cli(
        capsys, server, op, "tasks", "list", "--project", "alpha", "--state", "sleepy"
    )
    assert code == 2 and "error" in err
    code, _, err = await _cli(capsys, server, op, "tasks", "cancel", created["name"])
    assert code == 1 and "FAILED_PRECONDITION" in err


def _conveyor() -> list[str]:
    script = Path(sys.executable).parent / "conveyor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "conveyor.client.cli"]


async def test_worker_command_runs_imported_handlers_and_stops_on_sigterm(
    server: ConveyorServer,
    keys: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "tasks.py").write_text(
        textwrap.dedent(
            """
            from conveyor.client import task

            @task("greet")
            def greet(ctx):
                ctx.set_summary("greeted")
                return {"hello": ctx.input["name"]}
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
                "--project",
                "alpha",
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

            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 15)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = log.read_text()
    assert code == 0, text
    assert "cli-worker stopped" in text


def test_worker_command_refuses_modules_without_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command puts the working directory on sys.path, as `python -m` does.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit, match="registered no @task handlers"):
        main(["worker", "--import", "textwrap"])
