"""The REST surface (every google.api.http rule: verb, path, body, response body) equals
the snapshot in tests/snapshots/rest_surface.txt, so no route changes by accident.

A route that changes on purpose: rerun with CONVEYOR_UPDATE_SNAPSHOTS=1 to rewrite the
snapshot, and commit it with the proto change (the diff shows the new surface). buf
breaking (scripts/breaking, FILE rules) does not look at http annotations; this does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2

from conveyor.server.rpc.rules import SERVICES

SNAPSHOT = Path(__file__).parent / "snapshots" / "rest_surface.txt"
# The googleapis stubs type the extension loosely; index with it as Any.
_HTTP: Any = annotations_pb2.http
_VERBS = ("get", "put", "post", "delete", "patch")


def _line(rpc: str, rule: http_pb2.HttpRule) -> str:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        assert pattern in _VERBS, f"{rpc}: unexpected http pattern {pattern!r}"
        verb, path = pattern.upper(), getattr(rule, pattern)
    parts = [f"{verb:6} {path}"]
    if rule.body:
        parts.append(f"body={rule.body}")
    if rule.response_body:
        parts.append(f"response_body={rule.response_body}")
    return f"{rpc}: {' '.join(parts)}"


def rest_surface() -> str:
    """One line per http rule (additional bindings included), sorted by RPC."""
    lines = []
    for service in SERVICES:
        for method in service.methods:
            rpc = f"{service.full_name}.{method.name}"
            options = method.GetOptions()
            if not options.HasExtension(_HTTP):
                lines.append(f"{rpc}: (no REST binding)")
                continue
            rule: http_pb2.HttpRule = options.Extensions[_HTTP]
            lines.append(_line(rpc, rule))
            lines.extend(_line(rpc, extra) for extra in rule.additional_bindings)
    return "\n".join(sorted(lines)) + "\n"


def test_rest_surface_matches_the_snapshot() -> None:
    current = rest_surface()
    if os.environ.get("CONVEYOR_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(current)
    recorded = SNAPSHOT.read_text()
    added = sorted(set(current.splitlines()) - set(recorded.splitlines()))
    removed = sorted(set(recorded.splitlines()) - set(current.splitlines()))
    assert current == recorded, (
        "the REST surface changed; if on purpose, rerun with CONVEYOR_UPDATE_SNAPSHOTS=1 "
        f"and commit {SNAPSHOT.name}\n  added: {added}\n  removed: {removed}"
    )


def test_the_snapshot_covers_every_rpc() -> None:
    # A binding is never silently dropped from the snapshot: every contract RPC has a line.
    rpcs = {f"{s.full_name}.{m.name}" for s in SERVICES for m in s.methods}
    recorded = {line.split(":")[0] for line in SNAPSHOT.read_text().splitlines()}
    assert recorded == rpcs
