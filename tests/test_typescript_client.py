"""The TypeScript client (clients/typescript) against a real server: its own tests,
written for node's test runner, run here so that CI (which runs pytest) runs them.

They cover create, lease, complete, fail and retry, watch, a stale lease refused, and a
Worker draining 1,000 tasks (clients/typescript/test/*.test.ts). The client is built
with the pinned TypeScript compiler first; `.ci/run` installs the pinned packages with
`npm ci`, and the test does the same when they are missing. Without node the test skips
on a developer's machine and fails in CI, where it must run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conveyor.server.app import ConveyorServer

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "typescript"
BIN = CLIENT / "node_modules" / ".bin"


def _run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=CLIENT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def _build_and_test(address: str, api_key: str) -> subprocess.CompletedProcess[str]:
    if not (BIN / "tsc").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENT,
            check=True,
            timeout=300,
        )
    built = _run([str(BIN / "tsc"), "-p", "."])
    if built.returncode:
        return built
    tests = sorted(str(path) for path in (CLIENT / "dist" / "test").glob("*.test.js"))
    assert tests, "no compiled tests in clients/typescript/dist/test"
    env = {**os.environ, "CONVEYOR_ADDRESS": address, "CONVEYOR_API_KEY": api_key}
    # A test that hangs fails after a minute instead of holding the suite.
    return _run(["node", "--test", "--test-timeout=60000", *tests], env)


@pytest.mark.timeout(300)
async def test_typescript_client_suite(server: ConveyorServer, admin_key: str) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed in CI to test the TypeScript client")
        pytest.skip("node and npm are not installed: the TypeScript client cannot be tested")
    # In a thread: the server answers on this test's event loop meanwhile.
    ran = await asyncio.to_thread(_build_and_test, server.grpc_target, admin_key)
    assert ran.returncode == 0, ran.stdout[-20000:] + ran.stderr[-5000:]
    assert "# fail 0" in ran.stdout
