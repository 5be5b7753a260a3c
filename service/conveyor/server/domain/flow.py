"""Flow control at lease time: which ready tasks the limits admit.

Limits, all held across every worker and replica (the state is in PostgreSQL, read and
written under transaction-level advisory locks, one per limit):

- a queue's `max_concurrency` (0: none; 1: the sequential queue, strictly one at a time
  in lease order: priority, schedule_time, id);
- a task's `concurrency_key` with its `concurrency_limit`: at most that many RUNNING tasks
  share the key;
- rate limits as token buckets: a queue's `rate_limit`, and per-kind limits (for every
  worker, or for one). A bucket of rate r per second holds up to `burst(r)` tokens: a
  fifth of a second's worth, at least one, so "10/s" gives about ten spread-out starts
  a second instead of bursts of ten (and a leaser that looks a little late loses
  nothing). Each lease takes one token from every bucket that
  applies.

`admit` walks the candidates in lease order and takes each one whose limits have room;
a candidate passed over for a limit leaves the order of the others intact, and a
sequential queue never starts its second task while its first runs.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from conveyor.server.domain import rates

__all__ = ["Admission", "Bucket", "BucketId", "Candidate", "admit", "burst", "lock_key"]

BucketId = tuple[str, str, str]
"""(scope, key, worker): scope 'queue' (key = queue id) or 'kind' (worker '' = all)."""


def burst(per_second: float) -> float:
    """The most tokens a bucket holds."""
    return max(1.0, math.floor(per_second / 5))


def lock_key(project: str, kind: str, *parts: str) -> str:
    """The advisory lock name of a limit (hashed to a bigint by the database)."""
    return "/".join(("conveyor", kind, project, *parts))


@dataclass(frozen=True, slots=True)
class Candidate:
    id: uuid.UUID
    queue: str
    kind: str
    concurrency_key: str | None
    concurrency_limit: int
    max_concurrency: int
    rate_limit: str


@dataclass(slots=True)
class Bucket:
    """A token bucket as read under its lock; `take` changes it in memory."""

    id: BucketId
    rate: str
    tokens: float
    now: datetime
    per_second: float
    taken: int = 0

    @classmethod
    def read(
        cls,
        id: BucketId,
        rate: str,
        tokens: float | None,
        refill_time: datetime | None,
        now: datetime,
        stored_rate: str | None,
    ) -> Bucket | None:
        """The bucket now; None when `rate` is no limit. A changed rate starts full."""
        parsed = rates.parse(rate, "rate") if rate else None
        if parsed is None:
            return None
        full = burst(parsed.per_second)
        if tokens is None or refill_time is None or stored_rate != rate:
            level = full
        else:
            elapsed = max(0.0, (now - refill_time).total_seconds())
            level = min(full, tokens + elapsed * parsed.per_second)
        return cls(id, rate, level, now, parsed.per_second)

    def wait(self) -> float:
        """Seconds until it holds a whole token (0 when it does)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_second


@dataclass(slots=True)
class Admission:
    chosen: list[Candidate] = field(default_factory=list)
    rate_wait: float | None = None
    """Seconds until a rate-limited candidate could start (None: none was rate limited)."""
    rate_limited: int = 0
    concurrency_limited: int = 0
    passed_over_own: int = 0
    """Candidates held back by a limit of their own (concurrency key, kind bucket) rather
    than their queue's: later candidates of the same queue may still be admitted."""


def admit(
    candidates: list[Candidate],
    want: int,
    *,
    running_queue: dict[str, int],
    running_key: dict[str, int],
    buckets: dict[BucketId, Bucket],
    kind_buckets: dict[str, list[BucketId]],
    locked: set[str],
    project: str,
) -> Admission:
    """Up to `want` candidates the limits admit, in candidate order; takes their tokens.

    A candidate whose limit was not locked (a limit that appeared after the locks were
    taken) is left for the next lease.
    """
    out = Admission()
    for c in candidates:
        if len(out.chosen) >= want:
            break
        limited_queue = c.max_concurrency > 0 or c.rate_limit != ""
        if limited_queue and lock_key(project, "queue", c.queue) not in locked:
            continue
        if c.concurrency_key is not None and (
            lock_key(project, "key", c.concurrency_key) not in locked
        ):
            out.passed_over_own += 1
            continue
        if c.max_concurrency > 0 and running_queue.get(c.queue, 0) >= c.max_concurrency:
            out.concurrency_limited += 1
            continue
        if c.concurrency_key is not None and (
            running_key.get(c.concurrency_key, 0) >= max(1, c.concurrency_limit)
        ):
            out.concurrency_limited += 1
            out.passed_over_own += 1
            continue
        ids = list(kind_buckets.get(c.kind, []))
        if c.rate_limit:
            ids.append(("queue", c.queue, ""))
        applying = [buckets[i] for i in ids if i in buckets]
        if any(lock_key(project, "rate", *b.id) not in locked for b in applying):
            out.passed_over_own += 1
            continue
        empty = [b for b in applying if b.tokens < 1]
        if empty:
            out.rate_limited += 1
            if any(b.id[0] == "kind" for b in empty):
                out.passed_over_own += 1
            wait = max(b.wait() for b in empty)
            out.rate_wait = wait if out.rate_wait is None else min(out.rate_wait, wait)
            continue
        for b in applying:
            b.tokens -= 1
            b.taken += 1
        running_queue[c.queue] = running_queue.get(c.queue, 0) + 1
        if c.concurrency_key is not None:
            running_key[c.concurrency_key] = running_key.get(c.concurrency_key, 0) + 1
        out.chosen.append(c)
    return out
