"""Shared by the seed API tests (issue 20): the seed texts, their curl examples, and
running an example verbatim with curl against a real server.

The seeds are kept verbatim in docs/compat/seeds/. An example is taken from the text
as written, so the test breaks if the seed and the test drift apart. Pages flattened
into text keep a shell line continuation as `\\ ` inside one line (seed 002); the
scanner reads that as the continuation it was. The only changes made to a command:
the scheme and host of its URL become the test server's, and where the seed shows an
Authorization header (or the caller passes `key`), it carries a real key.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SEEDS = Path(__file__).resolve().parent.parent / "docs" / "compat" / "seeds"
PROBLEM = "application/problem+json"

# curl options that take an argument (those the seeds use, and their kin).
_WITH_ARGUMENT = {
    "-X",
    "--request",
    "-H",
    "--header",
    "-d",
    "--data",
    "--data-raw",
    "--data-binary",
    "--data-urlencode",
    "--url",
    "-u",
    "--user",
    "-F",
    "--form",
    "-o",
    "--output",
}
_URL = re.compile(r"^https?://[^/\s]+")


def seed_text(prefix: str) -> str:
    """The text of the seed whose file starts with `prefix` (`000`, `002-everruns`)."""
    [path] = sorted(SEEDS.glob(f"{prefix}*.txt"))
    return path.read_text(encoding="utf-8")


def _words(text: str, start: int) -> list[str]:
    """Shell words from `start` to the end of the command: quotes make one word each
    (never glued to what follows), a backslash before a newline or a space continues
    the line, an unquoted newline ends the command."""
    words: list[str] = []
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in " \n":
            i += 2
            continue
        if ch == "\n":
            break
        if ch in " \t":
            i += 1
            continue
        if ch in "'\"":
            end = text.index(ch, i + 1)
            words.append(text[i + 1 : end])
            i = end + 1
            continue
        j = i
        while (
            j < n
            and text[j] not in " \t\n'\""
            and not (text[j] == "\\" and j + 1 < n and text[j + 1] in " \n")
        ):
            j += 1
        words.append(text[i:j])
        i = j
    return words


def curl_examples(text: str) -> list[list[str]]:
    """Every curl command in `text`, as argv, in order of appearance.

    A command runs from `curl` to the first word that is neither an option, an
    option's argument, nor a URL (or to an unquoted newline).
    """
    commands: list[list[str]] = []
    for match in re.finditer(r"(?<![\w-])curl\s", text):
        words = _words(text, match.start())
        argv = [words[0]]
        expect_argument = False
        for word in words[1:]:
            if expect_argument:
                argv.append(word)
                expect_argument = False
            elif word in _WITH_ARGUMENT:
                argv.append(word)
                expect_argument = True
            elif word.startswith("-") or _URL.match(word):
                argv.append(word)
            else:
                break
        commands.append(argv)
    return commands


@dataclass
class CurlResult:
    status: int
    headers: dict[str, str]
    body: bytes
    argv: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def _rewrite(argv: list[str], base_url: str, key: str | None) -> list[str]:
    out: list[str] = []
    header_next = False
    has_auth = False
    for word in argv:
        if header_next and word.lower().startswith("authorization:"):
            has_auth = True
            word = f"Authorization: Bearer {key}" if key is not None else word
        header_next = word in ("-H", "--header")
        out.append(_URL.sub(base_url, word, count=1) if _URL.match(word) else word)
    if key is not None and not has_auth:
        out += ["-H", f"Authorization: Bearer {key}"]
    return out


async def run_curl(argv: list[str], base_url: str, key: str | None = None) -> CurlResult:
    """Runs a seed's curl command against `base_url` (e.g. http://127.0.0.1:PORT), in a
    subprocess so the server in this event loop keeps serving; returns its answer."""
    command = [*_rewrite(argv, base_url, key), "--silent", "--show-error", "--include"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    head, _, body = stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return CurlResult(status, headers, body, command)


def assert_seed_problem(result: CurlResult | Any, status: int, code: str) -> dict[str, Any]:
    """The seed error shape (seed 002): RFC 9457 with title, status, code, detail,
    instance, type and allowed_actions items of rel/href/operation_id/hint."""
    if isinstance(result, CurlResult):
        content_type, body = result.headers["content-type"], result.json()
        got = result.status
    else:  # an httpx.Response
        content_type, body, got = result.headers["content-type"], result.json(), result.status_code
    assert got == status, body
    assert content_type == PROBLEM
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"] and isinstance(body["title"], str)
    assert body["type"] == f"https://conveyor.dev/problems/{code.replace('_', '-')}"
    assert isinstance(body["detail"], str)
    assert isinstance(body["instance"], str) and body["instance"].startswith("/")
    assert isinstance(body["allowed_actions"], list)
    for action in body["allowed_actions"]:
        assert set(action) >= {"rel", "hint"}, action
        assert all(isinstance(value, str) for value in action.values()), action
    return dict(body)


@asynccontextmanager
async def rest(base_url: str, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the server at `base_url` that sends `key` as its bearer."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as http:
        yield http
