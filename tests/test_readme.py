"""Every command in the README runs, in order, against a server on free ports.

The fenced blocks become one bash script (`set -euo pipefail`, so the first failing
command fails the test, named by its block):

- ```sh blocks run as written;
- ```python blocks run with this interpreter, except one whose first line is
  `# name.py`, which is written to that file (the tour's handler module);
- blocks of other languages (```json answers) are not commands and are not run;
- a block right after `<!-- readme-test: skip (reason) -->` is not run; the reason is
  required, and only installing and the test suite itself are skipped today.

What differs from a reader's machine, and only that: HOME is a temporary directory
(so `~/.local/share/conveyor` is the server's data dir), `.venv` is this virtualenv,
the addresses 127.0.0.1:50051 and 127.0.0.1:8080 are replaced by the server's free
ports, `curl -N` streams are cut after 3 seconds, and `grpcurl` (not installable here)
is a no-op: each grpcurl line has a `buf curl` twin making the same call, which runs,
and this test checks that every grpcurl call has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- readme-test: skip \((?P<reason>[^)]*)\) -->\n)?"
    r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$",
    re.DOTALL | re.MULTILINE,
)
_FILE = re.compile(r"^# ([\w.-]+\.py)$")


def _blocks() -> list[tuple[str, str, str | None]]:
    """(language, body, skip reason) of every fenced block, in order."""
    return [(m["lang"], m["body"], m["reason"]) for m in _BLOCK.finditer(README.read_text("utf-8"))]


def _script(grpc: str, http: str) -> str:
    parts = [
        "set -euo pipefail",
        # Not installable here; every call it makes has a `buf curl` twin that runs.
        "grpcurl() { :; }",
    ]
    for number, (lang, body, reason) in enumerate(_blocks(), start=1):
        if reason is not None or lang not in ("sh", "python"):
            continue
        parts.append(f"echo '==> README block {number} ({lang})' >&2")
        if lang == "sh":
            lines = []
            for line in body.splitlines():
                if line.startswith("curl -N "):
                    # A stream never ends by itself: 3 seconds of it, then curl's 28.
                    line = line.replace("curl -N ", "curl -N --max-time 3 ", 1)
                    line += " || [ $? -eq 28 ]"
                lines.append(line)
            parts.append("\n".join(lines))
        else:
            first = body.splitlines()[0]
            target = _FILE.match(first)
            command = f"cat > {target[1]}" if target else '"$README_PYTHON" -'
            parts.append(f"{command} <<'README_PYTHON_EOF'\n{body}README_PYTHON_EOF")
    text = "\n".join(parts) + "\n"
    return text.replace("127.0.0.1:50051", grpc).replace("127.0.0.1:8080", http)


def test_skips_have_reasons_and_grpcurl_calls_have_buf_twins() -> None:
    blocks = _blocks()
    assert blocks, "no fenced blocks found"
    for _, _, reason in blocks:
        assert reason is None or reason.strip(), "a skipped block must say why"
    text = README.read_text("utf-8")
    grpcurl_calls = re.findall(r"127\.0\.0\.1:50051 ([\w.]+/\w+)", text)
    buf_calls = re.findall(r"http://127\.0\.0\.1:50051/([\w.]+/\w+)", text)
    assert grpcurl_calls and sorted(grpcurl_calls) == sorted(buf_calls)


@pytest.mark.timeout(400)
async def test_every_readme_command_runs(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONVEYOR_", "XDG_")) and k not in ("DATABASE_URL", "VIRTUAL_ENV")
    }
    env.update(
        HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        README_PYTHON=sys.executable,
    )
    data_dir = home / ".local" / "share" / "conveyor"
    server = await asyncio.create_subprocess_exec(
        str(work / ".venv" / "bin" / "conveyor"), "serve", "--database-url", database_url,
        "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
        "--log-level", "warning", cwd=work, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    log = tmp_path / "readme.log"
    script = None
    try:
        for _ in range(1200):
            if (data_dir / "server.json").exists():
                break
            assert server.returncode is None, "the server exited"
            await asyncio.sleep(0.05)
        addresses = json.loads((data_dir / "server.json").read_text())
        (tmp_path / "readme.sh").write_text(_script(addresses["grpc"], addresses["http"]))
        # Output to a file, not a pipe: the tour's background worker keeps its copy of
        # the descriptor open until the session is killed below.
        with log.open("wb") as out:
            script = await asyncio.create_subprocess_exec(
                "bash", str(tmp_path / "readme.sh"), cwd=work, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip
            code = await asyncio.wait_for(script.wait(), 300)
        assert code == 0, log.read_text(errors="replace")[-6000:]
    finally:
        if script is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(script.pid, signal.SIGTERM)  # the background worker too
        if server.returncode is None:
            server.terminate()
            await asyncio.wait_for(server.wait(), 30)
