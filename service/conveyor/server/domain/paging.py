"""Page sizes and opaque keyset page tokens shared by every List method."""

from __future__ import annotations

import base64
import json
from typing import Any

from conveyor.server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 5000


def page_size(value: int, field_path: str = "page_size") -> int:
    """0 means the default; 1..5000 are taken as given; anything else is refused."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument.of(field_path, f"must be between 1 and {MAX_PAGE_SIZE}")
    return value


def encode_token(position: dict[str, Any]) -> str:
    """An opaque token for the keyset position after the last row of a page."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(
    token: str, required: tuple[str, ...], field_path: str = "page_token"
) -> dict[str, Any]:
    """The position of a token from encode_token; INVALID_ARGUMENT for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.of(field_path, "is not a token this method returned") from None
    if not isinstance(position, dict) or any(k not in position for k in required):
        raise InvalidArgument.of(field_path, "is not a token this method returned")
    return position
