"""`conveyor keys create/update --rate-limit` and `conveyor projects update --rate-limit`
against a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from conveyor.client.cli import main
from conveyor.server.app import ConveyorServer


async def _cli(
    capsys: pytest.CaptureFixture[str], server: ConveyorServer, key: str, *argv: str
) -> tuple[int, Any, str]:
    base = ["--target", server.grpc_target, "--key", key, "-o", "json", "-p", "alpha"]
    code = await asyncio.to_thread(main, [*base, *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


async def test_rate_limits_from_the_command_line(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = keys["admin"]
    code, made, err = await _cli(
        capsys,
        server,
        admin,
        "keys",
        "create",
        "--role",
        "viewer",
        "--rate-limit",
        "read=50/100",
        "--rate-limit",
        "worker=0",
    )
    assert code == 0, err
    assert made["rate_limits"]["read"] == {"requests_per_second": 50.0, "burst": 100}
    assert "worker" in made["rate_limits"]
    code, updated, err = await _cli(
        capsys, server, admin, "keys", "update", made["name"], "--rate-limit", "read=default"
    )
    assert code == 0, err
    assert "read" not in updated["rate_limits"] and "worker" in updated["rate_limits"]
    code, project, err = await _cli(
        capsys, server, admin, "projects", "update", "--rate-limit", "bulk=2"
    )
    assert code == 0, err
    assert list(project["rate_limits"]) == ["bulk"]
    assert project["rate_limits"]["bulk"]["requests_per_second"] == 2
    code, _, err = await _cli(capsys, server, admin, "keys", "update", made["name"])
    assert code == 2 and "--rate-limit" in err
    code, _, err = await _cli(
        capsys, server, admin, "keys", "create", "--role", "viewer", "--rate-limit", "reads=1"
    )
    assert code == 2 and "read, write, bulk, stream, worker" in err
    code, _, err = await _cli(
        capsys, server, admin, "keys", "create", "--role", "viewer", "--rate-limit", "read=-1"
    )
    assert code == 1 and "rate_limits.read.requests_per_second" in err
