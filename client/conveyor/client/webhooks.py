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
second `v1=` while the project's secret rotation grace period runs.

Every delivery also carries the Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA-256(key, id + "." + t + "."
+ body)>`, space-separated, one per secret), where the key is the secret without its
`whsec_` prefix, base64-decoded, as the Standard Webhooks libraries read it. So a
receiver can use such a library, or pass all the request's headers here:

    webhooks.verify(request.body, request.headers, [current_secret, previous_secret])

With a mapping, `verify` checks the Standard Webhooks headers when present, else
Conveyor-Signature. Errors:

    WebhookVerificationError (a ValueError)
    ├── MalformedSignatureError        the header is missing parts or garbled
    ├── SignatureMismatchError         no v1 matches any secret: a changed body or a wrong secret
    └── TimestampOutOfToleranceError   signed too long ago (or in the future): a replay?
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

__all__ = [
    "MalformedSignatureError",
    "SignatureMismatchError",
    "TimestampOutOfToleranceError",
    "WebhookVerificationError",
    "sign",
    "sign_standard",
    "standard_key",
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


def standard_key(secret: str) -> bytes:
    """The HMAC key of a secret as the Standard Webhooks libraries derive it: the part
    after `whsec_`, base64-decoded (leniently, padding added, as they do)."""
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "==")
    except binascii.Error as exc:
        raise ValueError("the secret is not whsec_<base64>") from exc
    if not key:
        raise ValueError("the secret is empty")
    return key


def _standard_digest(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    message = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(standard_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign_standard(
    body: bytes | str, secret: str | Iterable[str], msg_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers for `body`: webhook-id, webhook-timestamp and
    webhook-signature (one `v1,<base64>` per secret, space-separated)."""
    data = body.encode() if isinstance(body, str) else body
    t = int(time.time()) if timestamp is None else timestamp
    secrets = [secret] if isinstance(secret, str) else [s for s in secret if s]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(t),
        "webhook-signature": " ".join(_standard_digest(s, msg_id, t, data) for s in secrets),
    }


def sign(body: bytes | str, secret: str | Iterable[str], timestamp: int | None = None) -> str:
    """A Conveyor-Signature header for `body` (to test your receiver)."""
    data = body.encode() if isinstance(body, str) else body
    t = int(time.time()) if timestamp is None else timestamp
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return ",".join([f"t={t}"] + [f"v1={_digest(s, t, data)}" for s in secrets])


def verify(
    body: bytes | str,
    header: str | Mapping[str, str],
    secrets: str | Iterable[str],
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Returns when `header` signs `body` with one of `secrets` within `tolerance`
    seconds of `now`; raises a WebhookVerificationError subclass otherwise.

    `header` is the Conveyor-Signature value, or the request's headers (any case): then
    the Standard Webhooks headers are checked if present, else Conveyor-Signature.
    Pass the body exactly as received (bytes, or text decoded as UTF-8): re-serialised
    JSON will not match.
    """
    data = body.encode() if isinstance(body, str) else body
    keys = [secrets] if isinstance(secrets, str) else [s for s in secrets if s]
    if not keys:
        raise ValueError("verify needs at least one secret")
    if not isinstance(header, str):
        headers = {name.lower(): value for name, value in header.items()}
        if "webhook-signature" in headers:
            _verify_standard(data, headers, keys, tolerance, now)
            return
        header = headers.get("conveyor-signature", "")
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
    _check_age(timestamp, tolerance, now)


def _verify_standard(
    data: bytes, headers: Mapping[str, str], keys: list[str], tolerance: float, now: float | None
) -> None:
    msg_id = headers.get("webhook-id", "")
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        raise MalformedSignatureError("webhook-timestamp is not unix seconds") from None
    if not msg_id:
        raise MalformedSignatureError("a Standard Webhooks delivery needs a webhook-id")
    given = [s for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    if not given:
        raise MalformedSignatureError("webhook-signature needs at least one v1,<base64>")
    expected = []
    for key in keys:
        try:
            expected.append(_standard_digest(key, msg_id, timestamp, data))
        except ValueError:
            continue  # not whsec_<base64>: it cannot have signed this
    if not any(hmac.compare_digest(e, s) for e in expected for s in given):
        raise SignatureMismatchError(
            "no webhook-signature matches: the body was changed, or it was signed with "
            "another secret (rotated? pass the current and the previous secret)"
        )
    _check_age(timestamp, tolerance, now)


def _check_age(timestamp: int, tolerance: float, now: float | None) -> None:
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise TimestampOutOfToleranceError(
            f"signed {age:.0f} s ago, outside the tolerance of {tolerance:g} s "
            "(a replayed request, or a clock that is off)"
        )
