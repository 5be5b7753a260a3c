"""Signing in: an API key exchanged for a session cookie, and the CSRF tokens of forms.

The key is sent once, in the sign-in form, and never stored in the browser: the cookie
holds a session token (`cvs_<id>_<secret>`) of which the server keeps only a hash. The
cookie is HttpOnly and SameSite=Strict, and Secure when the page came over TLS.

CSRF: every form that changes something carries a token, HMAC(server key, session id),
and a POST without the right one is refused with 403. The sign-in form, which has no
session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from conveyor.server.domain.auth import SESSION_PREFIX, Principal, mint_key, split_token
from conveyor.server.domain.keys import Authenticator
from conveyor.server.errors import Unauthenticated
from conveyor.server.store import dashboard_sessions
from conveyor.server.store.db import Pool

SESSION_COOKIE = "conveyor_session"
SIGN_IN_COOKIE = "conveyor_sign_in"
PROJECT_COOKIE = "conveyor_project"
SESSION_TTL_SECONDS = 12 * 3600


class Sessions:
    """Opens, checks and revokes dashboard sessions."""

    def __init__(self, pool: Pool, server_key: bytes) -> None:
        self._pool = pool
        self._server_key = server_key
        # No cache: a revoked session is refused by the very next page.
        self._authenticator = Authenticator(pool, ttl=0)

    async def open(self, api_key: str) -> tuple[str, Principal]:
        """Checks the key as any call would and opens a session for it; returns
        (session token, principal). Raises Unauthenticated for a bad key."""
        principal = await self._authenticator.authenticate([("authorization", f"Bearer {api_key}")])
        key_id = principal.key_name.rsplit("/", 1)[-1]
        minted = mint_key(SESSION_PREFIX)
        async with self._pool.connection() as conn:
            await dashboard_sessions.insert(
                conn,
                id=minted.key_id,
                key_id=key_id,
                secret_hash=minted.secret_hash,
                ttl_seconds=SESSION_TTL_SECONDS,
            )
        return minted.token, principal

    async def check(self, token: str) -> Principal | None:
        """The principal of a live session, or None (ended, revoked, key deleted)."""
        try:
            return await self._authenticator.authenticate([("authorization", f"Bearer {token}")])
        except Unauthenticated:
            return None

    async def revoke(self, token: str) -> None:
        try:
            session_id, _ = split_token(token, SESSION_PREFIX)
        except Unauthenticated:
            return
        async with self._pool.connection() as conn:
            await dashboard_sessions.revoke(conn, session_id)

    def csrf_token(self, session_token: str) -> str:
        session_id = session_token.split("_")[1] if "_" in session_token else session_token
        return hmac.new(self._server_key, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session_token: str, sent: str) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf_token(session_token), sent)


# Every page: scripts, styles and requests from this origin only, never framed (a page
# of buttons inside someone else's frame is a click-jacking target), no referrer abroad.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def secure(request: Request) -> bool:
    """Whether the page came over TLS (directly or through a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, **extra: Any) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=secure(request),
        path="/",
        **extra,
    )


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(24)


def sign_in_token_ok(request: Request, sent: str) -> bool:
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    return bool(expected) and bool(sent) and hmac.compare_digest(expected, sent)
