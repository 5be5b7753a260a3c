"""Builds EventService and the loops behind it for one server (called by registry.py):
the event listener and hub (WatchEvents), the retention loop, and the webhook dispatcher.
"""

from __future__ import annotations

from datetime import timedelta

from conveyor.server.context import AppContext
from conveyor.server.domain.events import Events
from conveyor.server.domain.redaction import Redactions
from conveyor.server.domain.webhooks_guard import WebhookGuard
from conveyor.server.loops.retention import RetentionLoop
from conveyor.server.loops.task_retention import TaskRetentionLoop
from conveyor.server.loops.webhooks import WebhookLoop
from conveyor.server.rpc.events import EventServicer
from conveyor.server.streams.hub import EventHub
from conveyor.server.streams.listener import WEBHOOKS_CHANNEL, EventListener

__all__ = ["wire_events"]


def wire_events(
    ctx: AppContext, listener: EventListener, redactions: Redactions | None = None
) -> EventServicer:
    """The EventService servicer; appends the replica's listener, the hub and loops to
    ctx.loops (the listener is shared with the lease notifier)."""
    hub = EventHub(ctx.pool, shutting_down=ctx.shutting_down)
    webhooks = WebhookLoop(
        ctx.pool,
        WebhookGuard(ctx.settings.webhook_allow),
        redactions=redactions,
        tracing=ctx.tracing,
    )
    listener.subscribe(hub.notify)
    listener.subscribe(webhooks.wake, WEBHOOKS_CHANNEL)
    retention = RetentionLoop(ctx.pool, timedelta(seconds=ctx.settings.event_retention))
    # Started in this order and stopped in reverse: the listener (which calls the others)
    # starts last and stops first.
    ctx.loops += [hub, webhooks, retention, TaskRetentionLoop(ctx.pool), listener]
    return EventServicer(Events(ctx.pool, hub))
