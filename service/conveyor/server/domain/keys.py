"""Authentication against stored keys, with a short cache, and the bootstrap key."""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import audit, request_limits
from conveyor.server.domain.auth import (
    KEY_PREFIX,
    ROLE_BY_NAME,
    SESSION_PREFIX,
    Principal,
    bearer_token,
    mint_key,
    secret_matches,
    split_token,
)
from conveyor.server.errors import Unauthenticated
from conveyor.server.logging import get_logger
from conveyor.server.store import api_keys, dashboard_sessions
from conveyor.v1 import enums_pb2

# A revoked key keeps working on other replicas for at most this long; the
# replica that revoked it forgets it at once.
CACHE_TTL_SECONDS = 5.0
# Verified tokens remembered at most (a flood of distinct valid keys clears it).
_MAX_VERIFIED = 10_000
BOOTSTRAP_PROJECT = "default"

_log = get_logger(__name__)


class Authenticator:
    """Turns an `authorization` header into a Principal."""

    def __init__(self, pool: AsyncConnectionPool[Any], ttl: float = CACHE_TTL_SECONDS) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, api_keys.KeyGrant | None]] = {}
        # The hot path: token -> (expiry, key id, principal) of tokens already verified,
        # so a known caller costs one dict lookup (no hashing, no Principal built).
        self._verified: dict[str, tuple[float, str, Principal]] = {}
        self._lookups: dict[str, asyncio.Task[tuple[float, api_keys.KeyGrant | None]]] = {}
        """Reads of a key's grant under way, by cache key (see _looked_up)."""

    def known(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal | None:
        """The principal of a token verified within the cache's life, else None; no I/O,
        so it can be asked before a call is counted in flight (request limits)."""
        try:
            verified = self._verified.get(bearer_token(metadata))
        except Unauthenticated:
            return None
        return verified[2] if verified is not None and verified[0] > time.monotonic() else None

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        token = bearer_token(metadata)
        now = time.monotonic()
        verified = self._verified.get(token)
        if verified is not None and verified[0] > now:
            return verified[2]
        session = token.startswith(SESSION_PREFIX + "_")
        entry_id, secret = split_token(token, SESSION_PREFIX if session else KEY_PREFIX)
        # Session ids and key ids are both 16 hex digits: the prefix keeps them apart.
        cache_key = SESSION_PREFIX + entry_id if session else entry_id
        cached = self._cache.get(cache_key)
        if cached is None or cached[0] <= now:
            cached = await self._looked_up(cache_key, entry_id, session)
        expiry, grant = cached
        if grant is None or not secret_matches(secret, grant.secret_hash):
            if session:
                raise Unauthenticated(
                    "the dashboard session has ended; sign in again", reason="SESSION_INVALID"
                )
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        principal = Principal(
            key_name=f"projects/{grant.project}/apiKeys/{grant.id}",
            project=grant.project,
            role=ROLE_BY_NAME[grant.role],
            system=grant.system,
            limits=request_limits.resolve(
                grant.rate_limits, grant.project_rate_limits, system=grant.system
            ),
        )
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        # Expires with the grant it was checked against, never later. Filed under the
        # key's id, so forgetting a key also forgets the sessions it opened.
        self._verified[token] = (expiry, grant.id, principal)
        return principal

    async def _looked_up(
        self, cache_key: str, entry_id: str, session: bool
    ) -> tuple[float, api_keys.KeyGrant | None]:
        """The grant of `entry_id` read from the database, and until when it may be used.

        One read per key at a time: every call in flight with a key whose cache entry
        has just expired lands here together (16 calls in flight meant 16 pool
        connections, 16 reads and 16 touches every CACHE_TTL_SECONDS), so the first
        starts the read and the others wait for it. The read runs on its own (shielded,
        in a fresh context: it serves every waiter, not the first caller's cancellation
        or log context)."""
        lookup = self._lookups.get(cache_key)
        if lookup is None:
            lookup = asyncio.get_running_loop().create_task(
                self._read(cache_key, entry_id, session), context=contextvars.Context()
            )
            self._lookups[cache_key] = lookup
            lookup.add_done_callback(partial(self._looked, cache_key))
        return await asyncio.shield(lookup)

    def _looked(self, cache_key: str, lookup: asyncio.Task[Any]) -> None:
        if self._lookups.get(cache_key) is lookup:
            del self._lookups[cache_key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: its waiters may all have gone

    async def _read(
        self, cache_key: str, entry_id: str, session: bool
    ) -> tuple[float, api_keys.KeyGrant | None]:
        now = time.monotonic()
        async with self._pool.connection() as conn:
            if session:
                grant = await dashboard_sessions.get_grant(conn, entry_id)
            else:
                grant = await api_keys.get_grant(conn, entry_id)
            if grant is not None:
                await api_keys.touch(conn, grant.id)
        cached = self._cache[cache_key] = (now + self._ttl, grant)
        return cached

    def forget_project(self, project: str) -> None:
        """Forgets every key of `project`, so its changed defaults apply at once here."""
        for cache_key in [
            k
            for k, (_, grant) in self._cache.items()
            if grant is not None and grant.project == project
        ]:
            del self._cache[cache_key]
        for token in [t for t, v in self._verified.items() if v[2].project == project]:
            del self._verified[token]

    def forget(self, key_id: str) -> None:
        for cache_key in [
            k for k, (_, grant) in self._cache.items() if grant is not None and grant.id == key_id
        ]:
            del self._cache[cache_key]
        self._cache.pop(key_id, None)
        self._lookups.pop(key_id, None)  # callers from now on read the key again
        for token in [t for t, v in self._verified.items() if v[1] == key_id]:
            del self._verified[token]


async def ensure_bootstrap_key(pool: AsyncConnectionPool[Any], data_dir: Path) -> str | None:
    """Mints the system admin key on first start and writes it to <data_dir>/admin.key.

    Returns the token when one was minted. Replicas starting together race on an
    advisory lock so exactly one key is minted; a later start with no admin.key
    file (another replica's data dir) leaves the existing key alone, and says so.
    """
    path = data_dir / "admin.key"
    async with pool.connection() as conn, conn.transaction():
        await api_keys.lock_bootstrap(conn)
        if await api_keys.system_key_exists(conn):
            minted = None
        else:
            minted = mint_key()
            await api_keys.insert(
                conn,
                id=minted.key_id,
                project=BOOTSTRAP_PROJECT,
                role="admin",
                display_name="bootstrap admin",
                secret_hash=minted.secret_hash,
                system=True,
            )
            write_key_file(path, minted.token)
    if minted is not None:
        _log.info("bootstrap admin key written", path=str(path))
        return minted.token
    if path.exists():
        _log.info("admin key", path=str(path))
    else:
        # A fresh data dir against a database that has its key elsewhere: say so, and
        # how to get one, rather than leave the operator with no key and no word.
        _log.warning(
            "no admin key in this data dir: the database's bootstrap key was written "
            "elsewhere; `conveyor admin-key reset` revokes it and writes a new one here",
            path=str(path),
        )
    return None


RESET_ISSUER = "local:conveyor admin-key reset"
"""The audit log's issued_by for a reset: it is made with database access, not a key."""


async def reset_bootstrap_key(
    pool: AsyncConnectionPool[Any], data_dir: Path, server_key: bytes
) -> tuple[str, list[str]]:
    """Revokes every system key, mints a new one into <data_dir>/admin.key, and records
    it in the `default` project's audit chain, in one transaction.

    Returns the new key's name and the names of the keys revoked.
    """
    issuer = Principal(
        key_name=RESET_ISSUER, project=BOOTSTRAP_PROJECT, role=ROLE_BY_NAME["admin"], system=True
    )
    minted = mint_key()
    name = f"projects/{BOOTSTRAP_PROJECT}/apiKeys/{minted.key_id}"
    async with pool.connection() as conn, conn.transaction():
        await api_keys.lock_bootstrap(conn)
        revoked = await api_keys.delete_system(conn)
        await api_keys.insert(
            conn,
            id=minted.key_id,
            project=BOOTSTRAP_PROJECT,
            role="admin",
            display_name="bootstrap admin",
            secret_hash=minted.secret_hash,
            system=True,
        )
        await audit.record(
            conn,
            server_key,
            issuer,
            enums_pb2.COMMAND_VERB_CREATE_API_KEY,
            name,
            {"role": "admin", "system": True, "reset": True, "revoked": revoked},
            project=BOOTSTRAP_PROJECT,
        )
        # Last, so a failed transaction leaves the old file (and the old key) alone.
        write_key_file(data_dir / "admin.key", minted.token)
    _log.warning("bootstrap admin key reset", path=str(data_dir / "admin.key"), revoked=revoked)
    return name, revoked


def write_key_file(path: Path, token: str) -> None:
    """Writes a key readable by its owner only, never briefly readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
