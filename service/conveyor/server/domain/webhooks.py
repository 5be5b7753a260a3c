"""Webhook rules: the retry policy and the signature.

A delivery is retried with exponential backoff and jitter until it is delivered (a 2xx
answer), until `max_attempts`, or until `max_age` has passed since the transition; a
refusal by the SSRF guard that no retry can change (the URL itself) ends it at once.

Signature: `Conveyor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256(secret, t + "." +
body)>`; while a rotation's grace period runs, a second `v1=` signs with the previous
secret, so receivers that still hold the old one keep verifying.
`conveyor.client.webhooks.verify` checks it.

Every delivery also carries the Standard Webhooks headers (webhook-id, webhook-timestamp,
webhook-signature `v1,<base64>` over `id.timestamp.body`, one per secret), keyed the way
the Standard Webhooks libraries read a `whsec_` secret, so a receiver's stock verifier
accepts it. The signing code is the client's, so sender and verifier cannot drift.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from conveyor.client.webhooks import sign_standard
from conveyor.server.domain.retry_policy import exponential_step

__all__ = [
    "SIGNATURE_HEADER",
    "WEBHOOK_ID_HEADER",
    "WebhookPolicy",
    "signature_header",
    "standard_headers",
]

SIGNATURE_HEADER = "Conveyor-Signature"
WEBHOOK_ID_HEADER = "Conveyor-Webhook-Id"
"""The delivery's id: the same on every attempt, so receivers can drop duplicates."""


@dataclass(frozen=True)
class WebhookPolicy:
    timeout: float = 10.0
    """Seconds one attempt may take, from resolving the host to the response headers."""
    initial_backoff: float = 10.0
    max_backoff: float = 3600.0
    max_age: float = 24 * 3600.0
    """Seconds after the transition when retrying stops."""
    max_attempts: int = 30
    lease: float = 60.0
    """Seconds a replica owns a claimed delivery; another takes it over after that."""

    def __post_init__(self) -> None:
        if self.lease <= self.timeout:
            raise ValueError("the lease must outlast the attempt timeout")

    def backoff(self, attempt: int, rand: float) -> float:
        """Seconds before the attempt after `attempt` (1 for the first): exponential,
        capped, and jittered over its upper half so retries of many deliveries spread
        out without ever coming sooner than half the step."""
        step = float(exponential_step(attempt, self.initial_backoff, self.max_backoff))
        return step / 2 + rand * step / 2


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    """`t=...,v1=...[,v1=...]`, one v1 per secret (current first)."""
    parts = [f"t={timestamp}"]
    parts += [f"v1={sign(secret, timestamp, body)}" for secret in secrets if secret]
    return ",".join(parts)


def standard_headers(
    secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature (current secret first)."""
    return sign_standard(body, [secret for secret in secrets if secret], msg_id, timestamp)
