"""The webhook dispatcher: delivers the outbox, at least once, from any replica.

Each pass claims due deliveries with FOR UPDATE SKIP LOCKED in a short transaction,
sends them concurrently outside any transaction, and records each attempt (status,
error, duration) with an event that ListEvents and WatchEvents show. An attempt POSTs

    {"event": "task.succeeded", "timestamp": "<RFC 3339>", "task": <Task as JSON>}

(proto field names) to the address the SSRF guard checked, with Conveyor-Signature,
Conveyor-Webhook-Id (the same on every attempt), Conveyor-Event and
Conveyor-Webhook-Attempt headers, the Standard Webhooks headers (webhook-id,
webhook-timestamp, webhook-signature), a total timeout, and no redirects followed (a 3xx is
a failed attempt). The body is fixed by the first attempt so every retry sends the same
bytes. The outbox trigger NOTIFYs `conveyor_webhooks` and the listener pokes the loop,
so a delivery starts within milliseconds; the interval is the backstop. With tracing
on, each attempt is a CLIENT span in the trace of the request that created the task.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Counter, Histogram

from conveyor.client._json import message_to_json
from conveyor.client._tracing import valid_traceparent
from conveyor.server.domain.metrics import WEBHOOK_DELIVERIES
from conveyor.server.domain.redaction import Redactions, Rule
from conveyor.server.domain.webhooks import (
    SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    WebhookPolicy,
    signature_header,
    standard_headers,
)
from conveyor.server.domain.webhooks_guard import Refused, WebhookGuard
from conveyor.server.logging import get_logger
from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.render import enrai
from conveyor.server.render.tasks import task_message
from conveyor.server.store import webhooks as webhook_store
from conveyor.server.store.db import Pool
from conveyor.server.store.event_rows import task_from_snapshot
from conveyor.server.store.webhooks import DeliveryRow
from conveyor.server.tracing import Tracing

__all__ = ["WebhookLoop", "webhook_body"]

_log = get_logger(__name__)

ATTEMPTS = Counter(
    "conveyor_webhook_attempts_total",
    "Webhook delivery attempts by outcome: delivered, http_error, timeout, network_error, "
    "refused (by the SSRF guard).",
    ["outcome"],
)
FINISHED = Counter(
    "conveyor_webhook_deliveries_total",
    "Webhook deliveries that ended, by final state (delivered, failed).",
    ["state"],
)
ATTEMPT_SECONDS = Histogram(
    "conveyor_webhook_attempt_duration_seconds",
    "Duration of webhook delivery attempts.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
USER_AGENT = "conveyor-webhooks/1"


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def webhook_body(row: DeliveryRow, rule: Rule | None = None) -> str:
    """The JSON body of a delivery, built from the task as the transition left it; its
    input redacted by the project's rule unless the project chose webhook_full_input."""
    task = task_message(task_from_snapshot(json.loads(row.task_json)))
    if rule is not None and not rule.webhook_full_input:
        rule.redact_task(task)
    if enrai.is_enrai(task):
        # Created through the Enrai seed API: its receivers expect Enrai's payload.
        payload = enrai.callback_payload(row.event_type, row.event_time, task)
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    payload = {
        "event": row.event_type,
        "timestamp": rfc3339(row.event_time),
        "task": message_to_json(task, preserving_proto_field_name=True),
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class WebhookLoop(PeriodicLoop):
    name = "webhooks"

    def __init__(
        self,
        pool: Pool,
        guard: WebhookGuard,
        *,
        policy: WebhookPolicy | None = None,
        redactions: Redactions | None = None,
        tracing: Tracing | None = None,
        interval: float = 1.0,
        concurrency: int = 16,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self.guard = guard
        self.policy = policy or WebhookPolicy()
        self._redactions = redactions
        self._tracing = tracing
        self._concurrency = concurrency
        self._rand = rand
        self._clock = clock
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # No pooled connections: a kept-alive TLS connection to one address must not
        # carry a request for another host name (its certificate was checked for the
        # first). No proxies from the environment: they would defeat the address pin.
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=self.policy.timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    def wake(self, project: str | None = None) -> None:
        """An EventListener subscriber: the outbox has a new delivery."""
        self.poke()

    async def delay(self) -> float:
        async with self._pool.connection() as conn:
            due = await webhook_store.next_due(conn)
        if due is None:
            return self.interval
        return min(max(due, 0.005), self.interval)

    async def run_once(self) -> int:
        """Attempts every due delivery; returns how many attempts were made."""
        attempted = 0
        while True:
            async with self._pool.connection() as conn:
                rows = await webhook_store.claim(conn, self._concurrency, self.policy.lease)
            if rows:
                await asyncio.gather(*(self._attempt(row) for row in rows))
            attempted += len(rows)
            if len(rows) < self._concurrency:
                return attempted

    async def _attempt(self, row: DeliveryRow) -> None:
        start_time = datetime.now(UTC)
        started = time.perf_counter()
        status_code: int | None = None
        error = ""
        outcome = "delivered"
        final = False
        try:
            rule = None
            if not row.body and self._redactions is not None:
                rule = await self._redactions.rule(row.project)
            body = row.body or webhook_body(row, rule)
        except Exception as exc:
            # A snapshot this build cannot render; retrying will not help.
            _log.exception("webhook body failed", webhook=str(row.id))
            body, error, outcome, final = "", f"could not build the body: {exc}", "refused", True
        if not error:
            try:
                async with asyncio.timeout(self.policy.timeout):
                    status_code = await self._send(row, body)
                if not 200 <= status_code < 300:
                    outcome = "http_error"
                    error = f"HTTP {status_code}"
                    if 300 <= status_code < 400:
                        error += " (redirects are not followed)"
            except Refused as refused:
                outcome, error, final = "refused", f"refused: {refused.reason}", refused.permanent
            except TimeoutError:
                outcome, error = "timeout", f"no answer within {self.policy.timeout:g} s"
            except httpx.HTTPError as exc:
                outcome, error = "network_error", f"{type(exc).__name__}: {exc}"[:1000]
            except OSError as exc:
                outcome, error = "network_error", f"{type(exc).__name__}: {exc}"[:1000]
        elapsed = time.perf_counter() - started
        ATTEMPTS.labels(outcome).inc()
        ATTEMPT_SECONDS.observe(elapsed)
        delivered = outcome == "delivered"
        async with self._pool.connection() as conn:
            state = await webhook_store.record(
                conn,
                row,
                body=body,
                start_time=start_time,
                duration_ms=round(elapsed * 1000),
                status_code=status_code,
                error=error,
                delivered=delivered,
                retry_delay=self.policy.backoff(row.attempt, self._rand()),
                max_attempts=row.attempt if final else self.policy.max_attempts,
                max_age=self.policy.max_age,
            )
        if state in ("DELIVERED", "FAILED"):
            FINISHED.labels(state.lower()).inc()
            queue = str(json.loads(row.task_json).get("queue", ""))
            WEBHOOK_DELIVERIES.labels(row.project, queue, state.lower()).inc()
        log = _log.info if delivered else _log.warning
        log(
            "webhook attempt",
            webhook=str(row.id),
            project=row.project,
            task=str(row.task_id),
            attempt=row.attempt,
            status_code=status_code,
            error=error or None,
            state=state,
        )

    async def _send(self, row: DeliveryRow, body: str) -> int:
        if self._tracing is None:
            return await self._post(row, body)
        task = json.loads(row.task_json)
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "conveyor.webhook.id": str(row.id),
            "conveyor.webhook.attempt": row.attempt,
            "conveyor.webhook.event": row.event_type,
            "conveyor.task.name": f"projects/{row.project}/tasks/{row.task_id}",
        }
        with self._tracing.span(
            f"webhook {row.event_type}",
            parent=valid_traceparent(task.get("traceparent")),
            kind="CLIENT",
            attributes=attributes,
        ) as span:
            status = await self._post(row, body)
            span.set_attribute("http.response.status_code", status)
            if not 200 <= status < 300:
                self._tracing.fail(span, f"HTTP {status}")
            return status

    async def _post(self, row: DeliveryRow, body: str) -> int:
        assert self._http is not None, "start() opens the HTTP client"
        target = await self.guard.check(row.url)
        content = body.encode()
        secrets = [row.secret] + ([row.previous_secret] if row.previous_secret else [])
        timestamp = int(self._clock())
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_header(secrets, timestamp, content),
            WEBHOOK_ID_HEADER: str(row.id),
            "Conveyor-Event": row.event_type,
            "Conveyor-Webhook-Attempt": str(row.attempt),
            # Standard Webhooks: webhook-id is the delivery's, the same on every attempt.
            **standard_headers(secrets, str(row.id), timestamp, content),
        }
        extensions: dict[str, Any] = {}
        if target.server_name is not None:
            extensions["sni_hostname"] = target.server_name
        request = self._http.build_request(
            "POST", target.url, content=content, headers=headers, extensions=extensions
        )
        # Only the status matters; the answer's body is never read, so a receiver
        # cannot make us hold a large one.
        response = await self._http.send(request, stream=True)
        await response.aclose()
        return response.status_code
