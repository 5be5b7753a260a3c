"""API keys and the authorisation rule of DESIGN.md section 8.

A key reads `cvk_<key id>_<secret>`. Only SHA-256 of the secret is stored: the
secret is 256 random bits, so a fast hash is as strong as a slow one and keeps
authentication off the hot path's critical budget.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from conveyor.server.domain.names import project_of
from conveyor.server.domain.request_limits import NO_LIMITS, Limits
from conveyor.server.errors import InvalidArgument, PermissionDenied, Unauthenticated
from conveyor.v1 import auth_pb2, enums_pb2

KEY_PREFIX = "cvk"
# A dashboard session reads `cvs_<session id>_<secret>` and acts as the key that opened
# it: the dashboard sends it as the bearer of its own gRPC calls, so every action it
# takes is authenticated and authorised exactly as any other call.
SESSION_PREFIX = "cvs"

ROLE_NAMES: dict[int, str] = {
    enums_pb2.ROLE_VIEWER: "viewer",
    enums_pb2.ROLE_WORKER: "worker",
    enums_pb2.ROLE_OPERATOR: "operator",
    enums_pb2.ROLE_ADMIN: "admin",
}
ROLE_BY_NAME: dict[str, int] = {name: role for role, name in ROLE_NAMES.items()}

# Roles form a ladder except worker and operator, which both extend viewer and
# do not include each other (a worker key must not cancel tasks; an operator key
# should not impersonate a worker).
_GRANTS: dict[int, frozenset[int]] = {
    enums_pb2.ROLE_VIEWER: frozenset({enums_pb2.ROLE_VIEWER}),
    enums_pb2.ROLE_WORKER: frozenset({enums_pb2.ROLE_VIEWER, enums_pb2.ROLE_WORKER}),
    enums_pb2.ROLE_OPERATOR: frozenset({enums_pb2.ROLE_VIEWER, enums_pb2.ROLE_OPERATOR}),
    enums_pb2.ROLE_ADMIN: frozenset(
        {
            enums_pb2.ROLE_VIEWER,
            enums_pb2.ROLE_WORKER,
            enums_pb2.ROLE_OPERATOR,
            enums_pb2.ROLE_ADMIN,
        }
    ),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, project and role, and its request limits."""

    key_name: str
    project: str
    role: int
    system: bool = False
    limits: Limits = NO_LIMITS

    def may(self, role: int) -> bool:
        return self.system or role in _GRANTS.get(self.role, frozenset())

    def sees(self, project: str) -> bool:
        return self.system or project == self.project


@dataclass(frozen=True)
class MintedKey:
    key_id: str
    secret_hash: bytes
    token: str


def mint_key(prefix: str = KEY_PREFIX) -> MintedKey:
    """A new key (or session): its id, the stored hash, and the bearer token shown once."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return MintedKey(key_id, hash_secret(secret), f"{prefix}_{key_id}_{secret}")


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str, prefix: str = KEY_PREFIX) -> tuple[str, str]:
    """Returns (key id, secret) of a bearer token; raises Unauthenticated when malformed."""
    found, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if found != prefix or len(key_id) != 16 or not secret:
        raise Unauthenticated("the API key is malformed", reason="API_KEY_INVALID")
    return key_id, secret


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of the `authorization: Bearer ...` header; raises Unauthenticated."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated(
                "authorization must be `Bearer <api key>`", reason="API_KEY_INVALID"
            )
    raise Unauthenticated(
        "no API key: send `authorization: Bearer <api key>`", reason="API_KEY_MISSING"
    )


def field_value(request: Message, path: str) -> str:
    """The string at a dotted field path of a request ("" when unset)."""
    value: object = request
    for part in path.split("."):
        if not isinstance(value, Message):
            return ""
        value = getattr(value, part, "")
    return value if isinstance(value, str) else ""


def authorize(principal: Principal, rule: auth_pb2.MethodAuth, request: Message | None) -> None:
    """Raises unless the principal may call a method with this rule on this request.

    Permission is decided before existence (AIP-193): a name in another project is
    PERMISSION_DENIED whether or not it exists, so callers learn nothing about it.
    """
    if rule.system_only and not principal.system:
        raise PermissionDenied("only a system key may do this", reason="SYSTEM_KEY_REQUIRED")
    if not principal.may(rule.role):
        raise PermissionDenied(
            f"the key's role {ROLE_NAMES.get(principal.role, '?')} may not do this; "
            f"it needs {ROLE_NAMES.get(rule.role, '?')}",
            reason="ROLE_INSUFFICIENT",
            metadata={"required_role": ROLE_NAMES.get(rule.role, "")},
        )
    if not rule.resource_field or request is None:
        return
    paths = rule.resource_field.split("|")
    value = ""
    for path in paths:
        value = field_value(request, path)
        if value:
            break
    if not value:
        raise InvalidArgument.of(paths[0], "is required")
    project = project_of(value)
    if project is None:
        raise InvalidArgument.of(
            paths[0], "must be a resource name starting with projects/{project}"
        )
    if not principal.sees(project):
        raise PermissionDenied(
            f"the key may not act on project {project}",
            reason="PROJECT_DENIED",
            metadata={"project": project},
        )
