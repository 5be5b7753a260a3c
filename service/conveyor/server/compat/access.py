"""Who a seed request acts as: its bearer key, or the anonymous key on loopback.

The seed APIs take the same API keys and roles as v1, as `Authorization: Bearer`.
Enrai's and Everruns' documented examples send no key at all; with `conveyor serve
--compat-anonymous ROLE` a keyless request to a seed route whose client address is a
loopback address (127.0.0.0/8, ::1) acts with that role in the `default` project,
through an API key the server keeps for that purpose (domain/anonymous_keys.py: stored
hashed like any key, listed with ListApiKeys, audited when first made). A keyless
request from any other address is forwarded without a key, so the interceptor refuses
it (401, API_KEY_MISSING) exactly as it refuses a keyless v1 call.

The client address is the one uvicorn reports: the socket's peer, or X-Forwarded-For
when the peer is a trusted proxy (127.0.0.1 by default). A reverse proxy on the same
host that does not send X-Forwarded-For makes every request look local; do not turn
the option on behind one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.requests import Request

from conveyor.server.compat.v1 import Caller
from conveyor.server.gateway.upstream import request_id_of

__all__ = ["Anonymous", "caller_of", "is_loopback"]


@dataclass(frozen=True)
class Anonymous:
    """The anonymous access of `--compat-anonymous ROLE`: the role and its key."""

    role: str
    token: str


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def caller_of(
    request: Request, anonymous: Anonymous | None, traceparent: str | None = None
) -> Caller:
    """The caller of a seed request: its own Authorization header when it sent one
    (even a bad one: that is refused, never replaced), else the anonymous key for a
    loopback client when the server allows it, else no key."""
    request_id = request_id_of(request.headers)
    header = request.headers.get("authorization")
    if header is not None:
        return Caller(header, request_id, traceparent=traceparent)
    client = request.client.host if request.client is not None else None
    if anonymous is not None and is_loopback(client):
        return Caller(
            f"Bearer {anonymous.token}", request_id, anonymous=True, traceparent=traceparent
        )
    return Caller(None, request_id, traceparent=traceparent)
