"""The SQL of the limited lease path (queries/lease_limits.sql); domain/leases.py runs it
in one transaction and domain/flow.py decides."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.domain.flow import Bucket, BucketId, Candidate
from conveyor.server.store import sql

_Q = sql.load_blocks("lease_limits")

SCAN = 500
"""Most ready tasks one limited lease looks at (in lease order)."""


async def candidates(
    conn: AsyncConnection[Any], project: str, queues: Sequence[str], scan: int = SCAN
) -> list[Candidate]:
    """The first `scan` ready tasks of `queues` in lease order."""
    one = len(queues) == 1
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _Q["candidates_one_queue" if one else "candidates"],
            {
                "project": project,
                "queues": list(queues),
                "queue": queues[0] if one else "",
                "scan": scan,
            },
        )
        return [Candidate(**r) for r in await cur.fetchall()]


async def kind_limits(
    conn: AsyncConnection[Any], project: str, worker: str, kinds: Sequence[str]
) -> dict[str, list[BucketId]]:
    """Kind -> the ids of the kind buckets that apply to `worker`."""
    out: dict[str, list[BucketId]] = {}
    async with conn.cursor() as cur:
        await cur.execute(
            _Q["kind_limits"], {"project": project, "worker": worker, "kinds": list(kinds)}
        )
        for key, w in await cur.fetchall():
            out.setdefault(key, []).append(("kind", key, w))
    return out


async def lock(conn: AsyncConnection[Any], keys: Sequence[str]) -> None:
    """Takes the advisory locks of `keys` (sorted by the caller) until the transaction ends."""
    if keys:
        await conn.execute(_Q["lock"], {"keys": list(keys)})


async def running(
    conn: AsyncConnection[Any], project: str, queues: Sequence[str], keys: Sequence[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """(running per queue, running per concurrency key)."""
    per_queue: dict[str, int] = {}
    per_key: dict[str, int] = {}
    async with conn.cursor() as cur:
        await cur.execute(
            _Q["running"], {"project": project, "queues": list(queues), "keys": list(keys)}
        )
        for scope, key, count in await cur.fetchall():
            (per_queue if scope == "queue" else per_key)[key] = count
    return per_queue, per_key


async def buckets(
    conn: AsyncConnection[Any], project: str, wanted: dict[BucketId, str | None]
) -> dict[BucketId, Bucket]:
    """The buckets of `wanted` (id -> the rate that applies now; None: the stored one),
    refilled to now."""
    ids = list(wanted)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _Q["buckets"],
            {
                "project": project,
                "scopes": [i[0] for i in ids],
                "keys": [i[1] for i in ids],
                "workers": [i[2] for i in ids],
            },
        )
        rows = {(r["scope"], r["key"], r["worker"]): r for r in await cur.fetchall()}
        now: datetime
        if rows:
            now = next(iter(rows.values()))["now"]
        else:
            await cur.execute(_Q["clock"])
            clock = await cur.fetchone()
            assert clock is not None
            now = clock["now"]
    out: dict[BucketId, Bucket] = {}
    for bid, rate in wanted.items():
        r = rows.get(bid)
        if rate is None:
            if r is None:
                continue
            rate = r["rate"]
        bucket = Bucket.read(
            bid,
            rate,
            r["tokens"] if r else None,
            r["refill_time"] if r else None,
            now,
            r["rate"] if r else None,
        )
        if bucket is not None:
            out[bid] = bucket
    return out


async def store_buckets(
    conn: AsyncConnection[Any], project: str, changed: Sequence[Bucket]
) -> None:
    if not changed:
        return
    await conn.execute(
        _Q["buckets_store"],
        {
            "project": project,
            "scopes": [b.id[0] for b in changed],
            "keys": [b.id[1] for b in changed],
            "workers": [b.id[2] for b in changed],
            "rates": [b.rate for b in changed],
            "tokens": [b.tokens for b in changed],
            "refill_times": [b.now for b in changed],
        },
    )
