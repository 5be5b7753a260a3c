"""The bootstrap admin key: its path logged at first start, `conveyor admin-key reset`
(issue #14 point 16), and one server per data dir (point 17)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import psycopg
import pytest

from conveyor.client import AsyncClient, UnauthenticatedError
from conveyor.client.cli import main
from conveyor.server.app import ConveyorServer
from conveyor.server.services import default_hooks
from conveyor.v1 import command_pb2, enums_pb2


def _conveyor() -> list[str]:
    script = Path(sys.executable).parent / "conveyor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "conveyor.client.cli"]


async def _serve(data_dir: Path, database_url: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return await asyncio.create_subprocess_exec(
        *_conveyor(), "serve", "--data-dir", str(data_dir), "--database-url", database_url,
        "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def _read_until(process: asyncio.subprocess.Process, marker: str) -> str:
    """The server's output up to the line holding `marker`."""
    assert process.stdout is not None
    seen = ""
    while marker not in seen:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, f"the server exited before saying {marker!r}:\n{seen}"
        seen += line.decode()
    return seen


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def test_first_start_logs_the_key_path_and_a_second_server_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = await _serve(data_dir, database_url)
    try:
        started = await _read_until(first, "conveyor serving")
        assert "bootstrap admin key written" in started
        assert str(data_dir / "admin.key") in started
        addresses = json.loads((data_dir / "server.json").read_text())

        second = await _serve(data_dir, database_url)
        out, _ = await asyncio.wait_for(second.communicate(), 60)
        refusal = out.decode()
        assert second.returncode == 1, refusal
        assert f"pid {first.pid}" in refusal
        assert addresses["grpc"] in refusal and addresses["http"] in refusal
        assert str(data_dir) in refusal and "--data-dir" in refusal
        assert "Traceback" not in refusal
        # The refused server touched nothing of the running one's.
        assert json.loads((data_dir / "server.json").read_text()) == addresses

        # Another data dir on the same database: no key is written there, and it says so.
        other = await _serve(tmp_path / "other", database_url)
        try:
            said = await _read_until(other, "conveyor serving")
            assert "no admin key in this data dir" in said and "admin-key reset" in said
        finally:
            await _stop(other)
    finally:
        await _stop(first)
    # Once the first server has stopped, the data dir is free again.
    again = await _serve(data_dir, database_url)
    try:
        said = await _read_until(again, "conveyor serving")
        assert "admin key" in said and str(data_dir / "admin.key") in said
    finally:
        await _stop(again)


async def test_admin_key_reset_revokes_the_old_key_and_writes_a_new_one(
    server: ConveyorServer,
    admin_key: str,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "recovered"
    code = await asyncio.to_thread(
        main,
        ["admin-key", "reset", "--database-url", database_url, "--data-dir", str(target)],
    )
    err = capsys.readouterr().err
    assert code == 0, err
    new_key = (target / "admin.key").read_text().strip()
    assert new_key != admin_key
    assert oct((target / "admin.key").stat().st_mode & 0o777) == "0o600"
    assert str(target / "admin.key") in err and "revoked projects/default/apiKeys/" in err

    with psycopg.connect(database_url) as conn:
        keys = conn.execute("SELECT id FROM api_keys WHERE system").fetchall()
    assert len(keys) == 1 and new_key.split("_")[1] == keys[0][0]

    # The new key is a system admin: it creates projects.
    async with AsyncClient(server.grpc_target, api_key=new_key) as client:
        await client.create_project("after-reset")
        # Audited in the default project's chain, which still verifies.
        commands = client.commands
        page = await commands.ListCommands(
            command_pb2.ListCommandsRequest(parent="projects/default")
        )
        reset = [c for c in page.commands if c.issued_by == "local:conveyor admin-key reset"]
        assert len(reset) == 1
        assert reset[0].verb == enums_pb2.COMMAND_VERB_CREATE_API_KEY
        assert reset[0].args["reset"] is True
        verdict = await commands.VerifyAuditLog(
            command_pb2.VerifyAuditLogRequest(parent="projects/default")
        )
        assert verdict.ok

    # A server that has not seen the old key (no auth cache) refuses it.
    replica = ConveyorServer(
        server.settings.replace(data_dir=tmp_path / "replica"), default_hooks()
    )
    await replica.start()
    try:
        async with AsyncClient(replica.grpc_target, api_key=admin_key) as client:
            with pytest.raises(UnauthenticatedError):
                await client.get_project("projects/default")
    finally:
        await replica.stop()
