"""Request limits per API key (RateLimits): what they are, where they come from, and
how they are checked on write.

A key's limit for a method class is its own `rate_limits.<class>` when set, else its
project's `rate_limits.<class>` (system keys skip this step: one project's default must
not throttle the deployment's bootstrap admin), else none. A limit with
`requests_per_second` 0 is none, so an explicit `{}` lifts a project default for one key.

Stored as the JSON form of conveyor.v1.RateLimits (proto field names), so a class set
to `{}` keeps its presence; request_limiter.py enforces the resolved limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from conveyor.server.domain.update_mask import Mask
from conveyor.server.errors import Violations
from conveyor.v1 import project_pb2

__all__ = [
    "CLASSES",
    "MAX_BURST",
    "MAX_RATE",
    "NO_LIMITS",
    "Limit",
    "Limits",
    "check",
    "from_json",
    "merged",
    "resolve",
    "to_json",
]

CLASSES = ("read", "write", "bulk", "stream", "worker")
"""The method classes, in RateLimits field order (rpc/method_classes.py files each RPC)."""
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """One class's budget for the whole deployment: `rate` calls per second refill a
    bucket of `burst` calls."""

    rate: float
    burst: float


Limits = tuple[Limit | None, ...]
"""A key's resolved limit per class, indexed like CLASSES (None: unlimited)."""
NO_LIMITS: Limits = (None,) * len(CLASSES)


def to_json(limits: project_pb2.RateLimits) -> dict[str, Any]:
    """The stored form: set classes only, each with its non-zero fields."""
    return json_format.MessageToDict(limits, preserving_proto_field_name=True)


def from_json(stored: Mapping[str, Any] | None) -> project_pb2.RateLimits:
    """The message of a stored value (unknown keys, from a newer server, are ignored)."""
    message = project_pb2.RateLimits()
    json_format.ParseDict(dict(stored or {}), message, ignore_unknown_fields=True)
    return message


def _limit(entry: Mapping[str, Any]) -> Limit | None:
    rate = float(entry.get("requests_per_second") or 0.0)
    if rate <= 0:
        return None
    burst = float(entry.get("burst") or 0) or max(rate, 1.0)
    return Limit(rate, burst)


def resolve(
    key: Mapping[str, Any] | None, project: Mapping[str, Any] | None, *, system: bool = False
) -> Limits:
    """A key's limits from its own stored rate_limits and its project's."""
    if not key and (system or not project):
        return NO_LIMITS
    resolved: list[Limit | None] = []
    for name in CLASSES:
        entry = (key or {}).get(name)
        if entry is None and not system:
            entry = (project or {}).get(name)
        resolved.append(_limit(entry) if isinstance(entry, Mapping) else None)
    return tuple(resolved)


def check(v: Violations, limits: project_pb2.RateLimits, prefix: str) -> None:
    """Adds a violation for each out-of-range value of `limits`."""
    for name in CLASSES:
        if not limits.HasField(name):  # type: ignore[arg-type]
            continue
        limit: project_pb2.RequestLimit = getattr(limits, name)
        path = f"{prefix}.{name}"
        rate = limit.requests_per_second
        if not math.isfinite(rate) or rate < 0 or rate > MAX_RATE:
            v.add(f"{path}.requests_per_second", f"must be between 0 and {MAX_RATE:.0f}")
        if limit.burst < 0 or limit.burst > MAX_BURST:
            v.add(f"{path}.burst", f"must be between 0 and {MAX_BURST}")
        elif limit.burst and not rate > 0:
            v.add(f"{path}.burst", "needs requests_per_second (0 means unlimited)")


def merged(
    stored: Mapping[str, Any] | None, resource: Message, mask: Mask
) -> project_pb2.RateLimits:
    """The stored rate_limits of a Project or ApiKey with the mask's `rate_limits` paths
    of `resource` (the update's message) applied."""
    target: Any = type(resource)()
    target.rate_limits.CopyFrom(from_json(stored))
    # FieldMask merging skips a path under a message the source leaves unset; here a
    # masked class absent from the request is cleared (AIP-134), so mark it present.
    source: Any = type(resource)()
    source.CopyFrom(resource)
    source.rate_limits.SetInParent()
    Mask(tuple(p for p in mask.paths if p.split(".")[0] == "rate_limits")).merge(source, target)
    result: project_pb2.RateLimits = target.rate_limits
    return result
