"""The audit chain: canonical bytes, digests, signatures, verification, and `record`.

Every state change made on behalf of a principal (other than creating tasks and a
worker's own reports) calls `record(conn, principal, verb, target, args)` inside the
transaction that makes the change, so the change and its Command commit together.

Chain (per project): command n has `sequence` n (1, 2, ... without gaps),
`prev_digest` = digest of n-1 ("" for 1),
`digest` = hex SHA-256(prev_digest as ASCII hex || canonical(n)) and
`signature` = hex HMAC-SHA-256(server key, digest as ASCII hex).

canonical(n) is UTF-8 JSON with sorted keys and no whitespace of
`{"args", "create_time", "idempotency_key", "issued_by", "name", "sequence",
"target", "verb"}`, where create_time is RFC 3339 UTC with microseconds
(`2025-01-02T03:04:05.000006Z`), verb the stored name (e.g. `RETRY_TASK`) and name
`projects/{project}/commands/{sequence}`. The status, result and times after
create_time live in `command_states`, outside the digest: they are set by the system
(acknowledgements, timeouts, jobs), never rewritten into the chain, and each change
appends a `command.<status>` event.

Appends are serialised per project by the row lock on the project's `audit_heads`
row (no global lock). The database refuses UPDATE, DELETE and TRUNCATE of chained
rows; `verify` names the first sequence that is missing, altered or out of place.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

from psycopg import AsyncConnection

from conveyor.server.domain.auth import Principal
from conveyor.server.logging import get_logger
from conveyor.server.store import commands as command_store
from conveyor.server.store.commands import CommandRow
from conveyor.server.store.db import Pool
from conveyor.v1 import enums_pb2

__all__ = [
    "Issued",
    "Verdict",
    "canonical",
    "command",
    "digest_of",
    "record",
    "record_change",
    "severity",
    "sign",
    "verb_name",
    "verify_rows",
]

_log = get_logger(__name__)

STATUSES = ("ISSUED", "DISPATCHED", "SUCCEEDED", "FAILED", "TIMED_OUT")
FINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT"})


def verb_name(verb: int) -> str:
    """The stored name of a CommandVerb (COMMAND_VERB_RETRY_TASK -> RETRY_TASK)."""
    return enums_pb2.CommandVerb.Name(verb).removeprefix("COMMAND_VERB_")  # type: ignore[arg-type]


def severity(verb: str, args: dict[str, Any]) -> str:
    """CRITICAL or NORMAL (Command.severity), from a stored verb name and its args.

    A rate limit for every worker of a project, and a purge that skips its
    confirmation, are CRITICAL. Both follow from the signed args, so the flag is as
    tamper-evident as the rest of the row.
    """
    if verb == "SET_RATE_LIMIT" and not args.get("worker"):
        return "CRITICAL"
    if verb == "PURGE_QUEUE" and args.get("force") is True:
        return "CRITICAL"
    return "NORMAL"


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normal(args: dict[str, Any]) -> dict[str, Any]:
    # The args as jsonb hands them back, so the digest written equals the one re-read.
    value: dict[str, Any] = json.loads(json.dumps(args, allow_nan=False))
    return value


def canonical(
    *,
    project: str,
    sequence: int,
    verb: str,
    target: str,
    args: dict[str, Any],
    issued_by: str,
    idempotency_key: str,
    create_time: datetime,
) -> bytes:
    """The canonical bytes of a command (see the module docstring)."""
    body = {
        "args": _normal(args),
        "create_time": rfc3339(create_time),
        "idempotency_key": idempotency_key,
        "issued_by": issued_by,
        "name": f"projects/{project}/commands/{sequence}",
        "sequence": sequence,
        "target": target,
        "verb": verb,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(prev_digest: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(prev_digest.encode("ascii") + canonical_bytes).hexdigest()


def sign(server_key: bytes, digest: str) -> str:
    return hmac.new(server_key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def _row_digest(row: CommandRow) -> str:
    return digest_of(
        row.prev_digest,
        canonical(
            project=row.project,
            sequence=row.sequence,
            verb=row.verb,
            target=row.target,
            args=row.args,
            issued_by=row.issued_by,
            idempotency_key=row.idempotency_key,
            create_time=row.create_time,
        ),
    )


@dataclass(frozen=True)
class Recorded:
    """What record() did: the command, and whether it existed already (idempotency)."""

    command: CommandRow
    existing: bool


async def record(
    conn: AsyncConnection[Any],
    server_key: bytes,
    principal: Principal,
    verb: int,
    target: str,
    args: dict[str, Any] | None = None,
    *,
    project: str,
    idempotency_key: str = "",
    status: str = "SUCCEEDED",
    result: dict[str, Any] | None = None,
    worker: str = "",
    timeout_ms: int | None = None,
) -> Recorded:
    """Appends a Command to the project's chain in the caller's transaction.

    With an idempotency_key the principal already used in this project, nothing is
    appended and the first command is returned (`existing`): the caller must then not
    act again. The check runs under the project's head lock, so two racing calls with
    the same key append once. `status` is the command's first status (SUCCEEDED for a
    change made in this transaction, ISSUED for one carried out later); a command
    addressed to a worker names it in `worker` and times out after `timeout_ms`.
    """
    head = await command_store.lock_head(conn, project)
    if idempotency_key:
        first = await command_store.get_by_key(conn, project, principal.key_name, idempotency_key)
        if first is not None:
            return Recorded(first, existing=True)
    sequence = head.sequence + 1
    name = verb_name(verb)
    args = _normal(args or {})
    digest = digest_of(
        head.digest,
        canonical(
            project=project,
            sequence=sequence,
            verb=name,
            target=target,
            args=args,
            issued_by=principal.key_name,
            idempotency_key=idempotency_key,
            create_time=head.now,
        ),
    )
    row = await command_store.append(
        conn,
        command_store.NewCommand(
            project=project,
            sequence=sequence,
            verb=name,
            target=target,
            args=args,
            issued_by=principal.key_name,
            idempotency_key=idempotency_key,
            create_time=head.now,
            prev_digest=head.digest,
            digest=digest,
            signature=sign(server_key, digest),
            status=status,
            result=result or {},
            worker=worker,
            timeout_ms=timeout_ms,
        ),
    )
    return Recorded(row, existing=False)


class CommandOptions(TypedDict, total=False):
    """The optional parts of a command, as `record` takes them."""

    idempotency_key: str
    status: str
    result: dict[str, Any] | None
    worker: str
    timeout_ms: int | None


@dataclass(frozen=True)
class Issued:
    """A command recorded in an open transaction: act on `conn`, unless `existing`."""

    conn: AsyncConnection[Any]
    command: CommandRow
    existing: bool


@asynccontextmanager
async def command(
    pool: Pool,
    server_key: bytes,
    principal: Principal,
    verb: int,
    target: str,
    args: dict[str, Any] | None = None,
    *,
    project: str,
    **options: Unpack[CommandOptions],
) -> AsyncIterator[Issued]:
    """Record the command, then act: the one way an operator command is carried out.

    Opens a transaction, appends the command (see `record`) and hands the caller its
    connection, so the change and its Command commit together or not at all. When
    `existing`, the idempotency key was used before: the caller answers with that
    command and does not act again.
    """
    async with pool.connection() as conn, conn.transaction():
        recorded = await record(
            conn, server_key, principal, verb, target, args, project=project, **options
        )
        yield Issued(conn, recorded.command, recorded.existing)
    row = recorded.command
    if not recorded.existing and severity(row.verb, row.args) == "CRITICAL":
        # Committed: the row exists. A replay (existing) was logged the first time.
        _log.critical(
            "critical command",
            command=row.name,
            verb=row.verb,
            target=row.target,
            issued_by=row.issued_by,
            args=row.args,
            severity="CRITICAL",
        )


async def record_change(
    conn: AsyncConnection[Any],
    server_key: bytes | None,
    principal: Principal | None,
    verb: int,
    target: str,
    args: dict[str, Any] | None = None,
    *,
    project: str,
) -> None:
    """Records a change made on behalf of `principal` in the caller's transaction.

    A change the system makes by itself (no principal: loops, bootstrap) is not a
    command and records nothing.
    """
    if principal is not None and server_key is not None:
        await record(conn, server_key, principal, verb, target, args, project=project)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    verified_count: int
    first_bad_sequence: int


def verify_rows(server_key: bytes, rows: Iterable[CommandRow], head_sequence: int) -> Verdict:
    """Walks the chain in sequence order; the first row that breaks it is named.

    A row is bad when its sequence is not the next one (one before it was deleted, or
    rows were reordered), its prev_digest is not the previous row's digest, its digest
    does not match its content, or its signature does not match its digest. When the
    head says more rows were appended than remain, the first missing one is bad.
    """
    expected, prev, count = 1, "", 0
    for row in rows:
        if row.sequence != expected:
            return Verdict(False, count, expected)
        if (
            row.prev_digest != prev
            or not hmac.compare_digest(_row_digest(row), row.digest)
            or not hmac.compare_digest(sign(server_key, row.digest), row.signature)
        ):
            return Verdict(False, count, row.sequence)
        prev, expected, count = row.digest, expected + 1, count + 1
    if head_sequence >= expected:
        return Verdict(False, count, expected)
    return Verdict(True, count, 0)
