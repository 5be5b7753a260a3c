"""TypeScript types generated from /openapi.json by openapi-typescript (pinned in
tests/openapi_typescript/package.json) mark the required fields as required: the
compiler refuses a TaskInput without `kind`, a batch item without `parent`, a request
enum's *_UNSPECIFIED value, and takes an answer's always-printed fields as present.

Needs node; `.ci/run` installs the pinned packages with `npm ci`, and the test does
the same when they are missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from conveyor.server.app import ConveyorServer

TOOLS = Path(__file__).parent / "openapi_typescript"
BIN = TOOLS / "node_modules" / ".bin"

CHECK = """
import type { components } from "./api";

type TaskInput = components["schemas"]["TaskInput"];
type Item = components["schemas"]["CreateTaskRequest"];
type Schedule = components["schemas"]["Schedule"];

export const ok: TaskInput = { kind: "email.send" };
export const item: Item = { parent: "", task: ok };
// @ts-expect-error kind is required
export const noKind: TaskInput = { queue: "default" };
// @ts-expect-error parent is required
export const noParent: Item = { task: ok };
export const unspecified: TaskInput = {
  kind: "k",
  // @ts-expect-error a request enum has no *_UNSPECIFIED value
  approval_timeout_action: "APPROVAL_ACTION_UNSPECIFIED",
};
// An answer's scalar fields are always printed, so they are typed as present.
export const title = (schedule: Schedule): string => schedule.title;
export const runs = (schedule: Schedule): number => schedule.recent_runs.length;
"""


def _node_tools() -> None:
    if not (BIN / "openapi-typescript").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TOOLS, check=True, timeout=300)


def _compile(document: dict[str, object], where: Path) -> subprocess.CompletedProcess[str]:
    """Generates api.ts from the document and type-checks CHECK against it."""
    _node_tools()
    (where / "openapi.json").write_text(json.dumps(document))
    subprocess.run(
        [str(BIN / "openapi-typescript"), "openapi.json", "-o", "api.ts"],
        cwd=where,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (where / "check.ts").write_text(CHECK)
    return subprocess.run(
        [str(BIN / "tsc"), "--noEmit", "--strict", "--skipLibCheck", "check.ts"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(300)
async def test_generated_typescript_marks_required_fields(
    server: ConveyorServer, tmp_path: Path
) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the TypeScript types cannot be generated")
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        document = (await http.get("/openapi.json")).json()
    compiled = await asyncio.to_thread(_compile, document, tmp_path)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
