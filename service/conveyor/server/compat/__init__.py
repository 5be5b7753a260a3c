"""The seed APIs: five systems Conveyor replaces, served at their own paths (issue 20).

Each module translates one seed's documented REST API into v1 calls and back; none
holds a rule of its own (validation, state changes, dedupe, audit, auth are v1's, and
reached through the same gRPC channel as the REST gateway: v1.py). Shared:

- v1.py        calling v1 as the caller (Caller, V1, V1Failed)
- access.py    Authorization: Bearer, or the anonymous key on loopback
- problems.py  RFC 9457 problem+json with code, allowed_actions, retry_after_seconds
- routing.py   seed routes, JSON bodies, answers

The mappings, field by field with every choice explained, are docs/compat/NNN-name.md.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from conveyor.server.compat import celery_brain, enrai, everruns, scaigrid, scheduled_tasks
from conveyor.server.compat.access import Anonymous
from conveyor.server.compat.routing import CompatContext
from conveyor.server.compat.v1 import V1
from conveyor.server.gateway.dispatch import Gateway

__all__ = ["SEEDS", "Anonymous", "compat_routes"]

SEEDS: tuple[Callable[[CompatContext], list[BaseRoute]], ...] = (
    enrai.routes,
    celery_brain.routes,
    everruns.routes,
    scheduled_tasks.routes,
    scaigrid.routes,
)
"""Each seed module's `routes`; a new seed adds its module here."""


def compat_routes(gateway: Gateway, anonymous: Anonymous | None = None) -> list[BaseRoute]:
    """Every seed API's routes, calling v1 through `gateway`'s channel."""
    ctx = CompatContext(V1(gateway), anonymous)
    return [route for seed in SEEDS for route in seed(ctx)]
