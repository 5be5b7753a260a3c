"""The Authenticator's key cache: calls in flight when an entry expires read the key once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain.keys import Authenticator, ensure_bootstrap_key
from conveyor.server.errors import Unauthenticated
from conveyor.server.store import api_keys


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each key read; the reads still go to the database."""
    reads: list[str] = []
    real = api_keys.get_grant

    async def counted(conn: AsyncConnection[Any], key_id: str) -> api_keys.KeyGrant | None:
        reads.append(key_id)
        await asyncio.sleep(0.01)  # the read in flight while the others arrive
        return await real(conn, key_id)

    monkeypatch.setattr(api_keys, "get_grant", counted)
    return reads


async def test_calls_in_flight_share_one_read_of_their_key(
    pool: AsyncConnectionPool[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await ensure_bootstrap_key(pool, tmp_path)
    assert token is not None
    reads = _reads(monkeypatch)
    auth = Authenticator(pool)
    metadata = (("authorization", f"Bearer {token}"),)

    principals = await asyncio.gather(*(auth.authenticate(metadata) for _ in range(16)))

    assert len(reads) == 1
    assert {p.key_name for p in principals} == {principals[0].key_name}
    assert principals[0].system
    # Cached now: no read at all.
    await auth.authenticate(metadata)
    assert len(reads) == 1


async def test_an_expired_entry_is_read_again_and_a_wrong_secret_still_fails(
    pool: AsyncConnectionPool[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await ensure_bootstrap_key(pool, tmp_path)
    assert token is not None
    reads = _reads(monkeypatch)
    auth = Authenticator(pool, ttl=0.0)  # every entry expired at once
    metadata = (("authorization", f"Bearer {token}"),)
    wrong = (("authorization", f"Bearer {token[:-4]}xxxx"),)

    await auth.authenticate(metadata)
    results = await asyncio.gather(
        auth.authenticate(metadata), auth.authenticate(wrong), return_exceptions=True
    )

    assert len(reads) == 2  # the second read shared by both calls
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], Unauthenticated)


async def test_a_caller_that_gives_up_does_not_cancel_the_read_of_the_others(
    pool: AsyncConnectionPool[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await ensure_bootstrap_key(pool, tmp_path)
    assert token is not None
    reads = _reads(monkeypatch)
    auth = Authenticator(pool)
    metadata = (("authorization", f"Bearer {token}"),)

    first = asyncio.ensure_future(auth.authenticate(metadata))
    second = asyncio.ensure_future(auth.authenticate(metadata))
    await asyncio.sleep(0)
    first.cancel()
    principal = await second

    assert principal.system
    assert len(reads) == 1
