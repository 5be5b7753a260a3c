"""What every command RPC checks the same way: the parent project, the idempotency key
and command names."""

from __future__ import annotations

from conveyor.server.domain import names, task_input
from conveyor.server.errors import InvalidArgument, Violations

MAX_IDEMPOTENCY_KEY = 200


def parent_project(parent: str) -> str:
    return names.parse(parent, "parent").project


def check_idempotency_key(v: Violations, key: str) -> str:
    task_input.check_text(v, key, "idempotency_key", MAX_IDEMPOTENCY_KEY)
    return key


def command_sequence(name: str, field_path: str = "name") -> tuple[str, int]:
    """(project, sequence) of `projects/{project}/commands/{sequence}`."""
    parsed = names.parse(name, field_path, "commands")
    if not parsed.id.isdigit() or len(parsed.id) > 18 or int(parsed.id) < 1:
        raise InvalidArgument.of(field_path, "must name a command: projects/{project}/commands/{n}")
    return parsed.project, int(parsed.id)
