"""The key keyless seed-API requests act with (`conveyor serve --compat-anonymous ROLE`).

With the option on, a keyless request to a seed API (compat/) from a loopback address
acts as this key: an ordinary API key of the `default` project with the chosen role,
so the interceptor authenticates, authorises and audits it like any other (its name
is the `issued_by` of what such requests do). It is stored hashed, like every key.

Its id and secret are derived from the server key (HMAC-SHA-256 of the role), so
every replica and every restart arrive at the same key without sharing a file, and
restarts never pile up keys. The first start with a role creates it (once, under the
bootstrap advisory lock) and records the creation in the audit log. Deleting it with
DeleteApiKey revokes it until the next start with the option; revoking the server key's
secrets is the way to change it for good.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import audit
from conveyor.server.domain.auth import KEY_PREFIX, ROLE_BY_NAME, Principal, hash_secret
from conveyor.server.domain.keys import BOOTSTRAP_PROJECT
from conveyor.server.logging import get_logger
from conveyor.server.store import api_keys
from conveyor.v1 import enums_pb2

__all__ = ["ISSUER", "ensure_anonymous_key"]

ISSUER = "local:conveyor serve --compat-anonymous"
"""The audit log's issued_by for the key's creation: made by the server's start."""

_log = get_logger(__name__)


def _derive(server_key: bytes, role: str) -> tuple[str, str]:
    key_id = hmac.new(server_key, b"compat-anonymous-id:" + role.encode(), hashlib.sha256)
    secret = hmac.new(server_key, b"compat-anonymous-secret:" + role.encode(), hashlib.sha256)
    token = base64.urlsafe_b64encode(secret.digest()).rstrip(b"=").decode()
    return key_id.hexdigest()[:16], token


async def ensure_anonymous_key(pool: AsyncConnectionPool[Any], server_key: bytes, role: str) -> str:
    """The bearer token of the anonymous key for `role`, creating the key if needed."""
    if role not in ROLE_BY_NAME:
        raise ValueError(f"--compat-anonymous {role!r} must be one of {', '.join(ROLE_BY_NAME)}")
    key_id, secret = _derive(server_key, role)
    name = f"projects/{BOOTSTRAP_PROJECT}/apiKeys/{key_id}"
    async with pool.connection() as conn, conn.transaction():
        await api_keys.lock_bootstrap(conn)
        if await api_keys.get_grant(conn, key_id) is None:
            await api_keys.insert(
                conn,
                id=key_id,
                project=BOOTSTRAP_PROJECT,
                role=role,
                display_name=f"compat anonymous ({role})",
                secret_hash=hash_secret(secret),
            )
            issuer = Principal(
                key_name=ISSUER,
                project=BOOTSTRAP_PROJECT,
                role=ROLE_BY_NAME["admin"],
                system=True,
            )
            await audit.record(
                conn,
                server_key,
                issuer,
                enums_pb2.COMMAND_VERB_CREATE_API_KEY,
                name,
                {"role": role, "compat_anonymous": True},
                project=BOOTSTRAP_PROJECT,
            )
            _log.warning("compat anonymous key created", key=name, role=role)
    return f"{KEY_PREFIX}_{key_id}_{secret}"
