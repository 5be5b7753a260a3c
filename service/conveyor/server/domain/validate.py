"""Small validators shared by the domain modules; each names the field it refuses."""

from __future__ import annotations

from urllib.parse import urlsplit

from conveyor.server.errors import Violations

MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 255
MAX_DISPLAY_NAME = 200


def labels(v: Violations, value: dict[str, str], field_path: str) -> None:
    if len(value) > MAX_LABELS:
        v.add(field_path, f"at most {MAX_LABELS} labels")
    for key, item in value.items():
        if not key or len(key) > MAX_LABEL_KEY:
            v.add(f"{field_path}[{key}]", f"keys must be 1 to {MAX_LABEL_KEY} characters")
        if len(item) > MAX_LABEL_VALUE:
            v.add(f"{field_path}[{key}]", f"values must be at most {MAX_LABEL_VALUE} characters")
        if "\x00" in key or "\x00" in item:
            v.add(f"{field_path}[{key}]", NUL_RULE)


# PostgreSQL stores no NUL character in text or jsonb.
NUL_RULE = "must not contain NUL characters"


def text(v: Violations, value: str, field_path: str, limit: int) -> None:
    if len(value) > limit:
        v.add(field_path, f"must be at most {limit} characters")
    elif "\x00" in value:
        v.add(field_path, NUL_RULE)


def url(v: Violations, value: str, field_path: str) -> None:
    """An absolute http(s) URL, or empty. Where it may point is checked at delivery."""
    if not value:
        return
    if "\x00" in value:
        v.add(field_path, NUL_RULE)
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        v.add(field_path, "must be an absolute http or https URL")
    elif len(value) > 2048:
        v.add(field_path, "must be at most 2048 characters")
