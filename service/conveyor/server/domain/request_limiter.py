"""The request limiter: a token bucket per (API key, method class), in this process's
memory, so the common call costs a dict lookup and no database round trip.

Every front door asks it before acting on a call (the gRPC interceptor does, and the
REST gateway and the seed APIs reach the service through that same gRPC channel).

Cluster-wide bound: a key's budget (RateLimits) is for the whole deployment. Each
replica enforces `1 / replicas` of it, rate and burst alike, where `replicas` is the live
count the replica registry refreshes every few seconds (loops/replicas.py), never per
call. Clients spread over replicas (the load balancer's job) then get the whole budget
together and no more. While a replica joins or leaves, until the others' next count,
the deployment admits up to one share more or less. A share's burst is at least one
call, so a key with a tiny budget on many replicas is still served.

A refusal is ResourceExhausted with reason REQUEST_LIMITED and a retry_after (RetryInfo)
of when the bucket will hold a call again; it is raised before the call is read, so
nothing happened and any call may be retried after that delay.

A flood is mostly refusals, so one costs as little as it can: a bucket keeps the refusal
it last made and raises that same object again until its token is due (at most a
second), so the interceptor can reuse the status it built from it (rpc/refusals.py).
The delay it states is then the one computed when it was made: too long by at most
that long (under 2x, and at most a second), never too short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from prometheus_client import Counter

from conveyor.server.domain.request_limits import CLASSES, Limit, Limits
from conveyor.server.errors import ResourceExhausted
from conveyor.server.logging import get_logger

__all__ = ["REASON", "REFUSED", "RequestLimiter"]

REASON = "REQUEST_LIMITED"
_log = get_logger(__name__)
REFUSED = Counter(
    "conveyor_requests_rate_limited_total",
    "Calls refused by their API key's request limits (REQUEST_LIMITED), by method class.",
    ["method_class"],
)
_REFUSED = tuple(REFUSED.labels(name) for name in CLASSES)
_MAX_BUCKETS = 100_000
"""Buckets kept before the full ones (equivalent to none) are dropped."""


_REUSE_SECONDS = 1.0
"""The longest a bucket raises the same refusal (and so the same stated delay)."""


class _Bucket:
    __slots__ = ("refusal", "refusal_until", "refusing", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.refusing = False
        self.refusal: tuple[Limit, int, ResourceExhausted] | None = None
        """The last refusal, with the limit and share it was made for."""
        self.refusal_until = 0.0


class RequestLimiter:
    """Token buckets per (key, class) for this replica's share of each budget."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self.replicas = 1
        """Live replicas sharing each budget (set by the replica registry)."""

    def share_with(self, replicas: int) -> None:
        """Enforce 1/`replicas` of each budget from now on."""
        self.replicas = max(replicas, 1)

    def admit(self, key: str, limits: Limits, cls: int) -> None:
        """Takes one call of class index `cls` from `key`'s bucket; raises
        ResourceExhausted (REQUEST_LIMITED, with retry_after) when it is empty."""
        limit = limits[cls]
        if limit is None:
            return
        refusal = self._take(key, cls, limit)
        if refusal is not None:
            _REFUSED[cls].inc()
            # The same object is raised again and again: drop the last raise's traceback.
            raise refusal.with_traceback(None)

    def _take(self, key: str, cls: int, limit: Limit) -> ResourceExhausted | None:
        """None when a token was taken, else the refusal saying when one is there."""
        share = max(self.replicas, 1)
        rate = limit.rate / share
        burst = max(limit.burst / share, 1.0)
        now = self._clock()
        bucket = self._buckets.get((key, cls))
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[key, cls] = _Bucket(burst, now)
        else:
            # A lowered limit or a new replica takes effect at once: never above burst.
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.refusing = False
            return None
        made = bucket.refusal
        if made is not None and now < bucket.refusal_until and made[:2] == (limit, share):
            return made[2]
        if not bucket.refusing:
            # One line per episode, not per refusal (the interceptor logs none of them):
            # a flood must not cost a log line per call.
            bucket.refusing = True
            _log.info("rate limit reached", api_key=key, method_class=CLASSES[cls], rate=limit.rate)
        wait = (1.0 - bucket.tokens) / rate
        refusal = _refusal(key, CLASSES[cls], limit, wait)
        bucket.refusal = (limit, share, refusal)
        bucket.refusal_until = now + min(wait, _REUSE_SECONDS)
        return refusal

    def _prune(self, now: float) -> None:
        """Forgets the buckets idle for a minute (most are full again by then); if that
        frees nothing, all of them: a flood of distinct keys must not grow memory
        without bound."""
        idle = [k for k, b in self._buckets.items() if now - b.stamp > 60.0]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()


def _refusal(key: str, cls: str, limit: Limit, wait: float) -> ResourceExhausted:
    return ResourceExhausted(
        f"rate limit of {key} for {cls} calls reached ({limit.rate:g}/s, burst "
        f"{limit.burst:g}, across the deployment); retry in {wait:.3f}s",
        reason=REASON,
        metadata={"api_key": key, "method_class": cls, "requests_per_second": f"{limit.rate:g}"},
        retry_after=timedelta(seconds=wait),
    )
