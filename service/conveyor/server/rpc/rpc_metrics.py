"""The RPC latency histogram the interceptor observes, by method and status code."""

from __future__ import annotations

from typing import Any

from prometheus_client import Histogram

__all__ = ["RPC_SECONDS", "timer"]

RPC_SECONDS = Histogram(
    "conveyor_rpc_duration_seconds",
    "RPC latency by method and status code (streams: until the stream ends).",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)


# Histogram children by (method, code): labels() validates and hashes its arguments
# at every call.
_TIMERS: dict[tuple[str, str], Any] = {}


def timer(method: str, code: str) -> Any:
    timer = _TIMERS.get((method, code))
    if timer is None:
        timer = _TIMERS[method, code] = RPC_SECONDS.labels(method, code)
    return timer
