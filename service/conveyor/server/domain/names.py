"""Resource names (AIP-122): parsing and the id grammar of DESIGN.md section 7."""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.server.errors import InvalidArgument, Violations

ID_RE = re.compile(r"^[a-z0-9-]{1,63}$")
ID_RULE = "must be 1 to 63 characters of a-z, 0-9 and -"
QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
"""A queue id: the one rule, for tasks, leases, workers, queues and commands alike."""
QUEUE_RULE = (
    "must be 1 to 200 characters of A-Z, a-z, 0-9, _ . and -, starting with a letter or digit"
)


def check_id(value: str, field_path: str) -> str:
    """Returns value when it is a valid resource id, else raises InvalidArgument."""
    if not ID_RE.match(value):
        raise InvalidArgument.of(field_path, ID_RULE)
    return value


def check_queue(v: Violations, value: str, field_path: str) -> None:
    """Adds a violation unless `value` is a queue id."""
    if not QUEUE_RE.match(value):
        v.add(field_path, QUEUE_RULE)


@dataclass(frozen=True)
class Name:
    """A parsed `projects/{project}[/{collection}/{id}]` name."""

    project: str
    collection: str = ""
    id: str = ""

    def __str__(self) -> str:
        if not self.collection:
            return f"projects/{self.project}"
        if not self.id:  # singleton, e.g. projects/p/webhookSecret
            return f"projects/{self.project}/{self.collection}"
        return f"projects/{self.project}/{self.collection}/{self.id}"


def project_of(value: str) -> str | None:
    """The project id of any resource name, or None when it is not one.

    Used by authorisation before anything else is parsed, so it must accept every
    collection and never raise.
    """
    parts = value.split("/")
    if len(parts) < 2 or parts[0] != "projects" or not ID_RE.match(parts[1]):
        return None
    return parts[1]


def parse(
    value: str, field_path: str, collection: str = "", *, id_re: re.Pattern[str] = ID_RE
) -> Name:
    """Parses a name of the given collection ("" for a project name)."""
    if not value:
        raise InvalidArgument.of(field_path, "is required")
    parts = value.split("/")
    expected = 2 if not collection else 4
    shape = "projects/{project}" + (f"/{collection}/{{id}}" if collection else "")
    if (
        len(parts) != expected
        or parts[0] != "projects"
        or not ID_RE.match(parts[1])
        or (collection and (parts[2] != collection or not id_re.match(parts[3])))
    ):
        raise InvalidArgument.of(field_path, f"must be a name of the form {shape}")
    if collection:
        return Name(parts[1], collection, parts[3])
    return Name(parts[1])


def parse_singleton(value: str, field_path: str, singleton: str) -> Name:
    """Parses `projects/{project}/{singleton}`."""
    parts = value.split("/")
    if (
        len(parts) != 3
        or parts[0] != "projects"
        or not ID_RE.match(parts[1])
        or parts[2] != singleton
    ):
        raise InvalidArgument.of(
            field_path, f"must be a name of the form projects/{{project}}/{singleton}"
        )
    return Name(parts[1], singleton)
