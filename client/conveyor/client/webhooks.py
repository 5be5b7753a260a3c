"""Verifying Conveyor webhooks in the service that receives them.

    from conveyor.client import webhooks

    def receive(request):
        webhooks.verify(
            request.body,                                   # the raw bytes, before parsing
            request.headers["Conveyor-Signature"],
            [current_secret, previous_secret],              # both during a rotation
        )
        event = json.loads(request.body)                    # {"event", "timestamp", "task"}
        if already_seen(request.headers["Conveyor-Webhook-Id"]):
            return 200                                      # deliveries are at least once

The header is `t=<unix seconds>,v1=<hex HMAC-SHA-256(secret, t + "." + body)>`, with a
second `v1=` while the project's secret rotation grace period runs. Errors:

    WebhookVerificationError (a ValueError)
    ├── MalformedSignatureError        the header is missing parts or garbled
    ├── SignatureMismatchError         no v1 matches any secret: a changed body or a wrong secret
    └── TimestampOutOfToleranceError   signed too long ago (or in the future): a replay?
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

__all__ = [
    "MalformedSignatureError",
    "SignatureMismatchError",
    "TimestampOutOfToleranceError",
    "WebhookVerificationError",
    "sign",
    "verify",
]

DEFAULT_TOLERANCE = 300.0


class WebhookVerificationError(ValueError):
    """The request is not a genuine, fresh Conveyor webhook."""


class MalformedSignatureError(WebhookVerificationError):
    pass


class SignatureMismatchError(WebhookVerificationError):
    pass


class TimestampOutOfToleranceError(WebhookVerificationError):
    pass


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()


def sign(body: bytes | str, secret: str | Iterable[str], timestamp: int | None = None) -> str:
    """A Conveyor-Signature header for `body` (to test your receiver)."""
    data = body.encode() if isinstance(body, str) else body
    t = int(time.time()) if timestamp is None else timestamp
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return ",".join([f"t={t}"] + [f"v1={_digest(s, t, data)}" for s in secrets])


def verify(
    body: bytes | str,
    header: str,
    secrets: str | Iterable[str],
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Returns when `header` signs `body` with one of `secrets` within `tolerance`
    seconds of `now`; raises a WebhookVerificationError subclass otherwise.

    Pass the body exactly as received (bytes, or text decoded as UTF-8): re-serialised
    JSON will not match.
    """
    data = body.encode() if isinstance(body, str) else body
    keys = [secrets] if isinstance(secrets, str) else [s for s in secrets if s]
    if not keys:
        raise ValueError("verify needs at least one secret")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in (header or "").split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise MalformedSignatureError(f"t={value!r} is not unix seconds") from None
        elif name == "v1":
            signatures.append(value.strip().lower())
    if timestamp is None or not signatures:
        raise MalformedSignatureError(
            "the Conveyor-Signature header needs t=<unix seconds> and at least one v1=<hex>"
        )
    expected = [_digest(key, timestamp, data) for key in keys]
    if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
        raise SignatureMismatchError(
            "no signature matches: the body was changed, or it was signed with another "
            "secret (rotated? pass the current and the previous secret)"
        )
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise TimestampOutOfToleranceError(
            f"signed {age:.0f} s ago, outside the tolerance of {tolerance:g} s "
            "(a replayed request, or a clock that is off)"
        )
