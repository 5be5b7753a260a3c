"""Request ids (AIP-155): a retried create returns its first result, and the same id
sent with a different request is refused instead of silently answered with the first.

A request is compared by `request_hash`: SHA-256 of the request message without its
request_id, serialized deterministically (map entries sorted), so a REST caller and a
gRPC caller sending the same fields hash alike. CreateTask keeps the hash on the task
row (written by the batched insert); the other creates claim their id here, in the
transaction that makes the resource.
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf.message import Message
from psycopg import AsyncConnection

from conveyor.server.errors import AlreadyExists, Violations
from conveyor.server.store import request_ids as request_id_store

__all__ = ["MAX_REQUEST_ID", "check", "claim", "made", "request_hash", "reused"]

MAX_REQUEST_ID = 128


def request_hash(request: Message) -> str:
    """The hash of `request` without its request_id (hex)."""
    if not request.request_id:  # type: ignore[attr-defined]
        # Nothing to clear (an empty proto3 string is not serialized): no copy. A create's
        # hash is made from a request built without its id (domain/task_batches.py).
        return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def check(v: Violations, request_id: str, field_path: str = "request_id") -> None:
    if len(request_id) > MAX_REQUEST_ID:
        v.add(field_path, f"must be at most {MAX_REQUEST_ID} characters")
    elif "\x00" in request_id:
        v.add(field_path, "must not contain NUL characters")


def reused(request_id: str, resource: str) -> AlreadyExists:
    """The error for a request_id sent again with a different request."""
    return AlreadyExists(
        f"request_id {request_id!r} was used with a different request (it made {resource});"
        " use a new request_id for a new request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id, "resource": resource},
    )


async def claim(
    conn: AsyncConnection[Any], project: str, method: str, request_id: str, hash_: str
) -> str | None:
    """Claims `request_id` for the create about to run in this transaction.

    None: go ahead (no request_id, or it is new; call `made` once the resource exists).
    A resource name: an earlier create with this id and the same request made it.
    Raises AlreadyExists (REQUEST_ID_REUSED) when the earlier request differed. A
    concurrent create with the same id makes this wait until it commits.
    """
    if not request_id:
        return None
    for _ in range(3):
        if await request_id_store.claim(conn, project, method, request_id, hash_):
            return None
        earlier = await request_id_store.earlier(conn, project, method, request_id)
        if earlier is None:
            continue  # its holder rolled back after we saw it: claim again
        if earlier.request_hash != hash_:
            raise reused(request_id, earlier.resource)
        return earlier.resource
    raise AlreadyExists(f"request_id {request_id!r} is in use; retry", reason="REQUEST_ID_BUSY")


async def made(
    conn: AsyncConnection[Any], project: str, method: str, request_id: str, resource: str
) -> None:
    """Records what the create that claimed `request_id` made."""
    if request_id:
        await request_id_store.set_resource(conn, project, method, request_id, resource)
