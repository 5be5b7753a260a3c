"""Errors of the seed APIs: RFC 9457 problem+json, as seed 002 describes it.

    {"type": "https://conveyor.dev/problems/invalid-argument", "title": "Invalid argument",
     "status": 400, "detail": "...", "code": "invalid_argument", "instance": "/api/...",
     "errors": [{"field": "activity_type", "description": "..."}],
     "retry_after_seconds": 3,          (429 and transient 503 only)
     "allowed_actions": [{"rel": "fix-and-retry", "method": "POST",
                          "href": "/api/v1/durable/tasks", "operation_id": "enqueue_task",
                          "hint": "Shorten 'activity_type' to <= 200 chars."}]}

The document is the v1 gateway's (gateway/problems.py) built from the same
google.rpc.Status, with two differences: field names are the seed's (`activity_type`,
not `task.kind`), and a step that repeats the call (`fix-and-retry`, `retry-later`)
links the seed route that was called, with the seed's operation id. Steps that point at
another method link the seed's own route for it when the seed has one (SeedApi.links: a
`refresh` of a ScaiGrid job is `GET /v1/queue/jobs/{job_id}`), else its v1 route, which
the caller's key may call as well (`resume` a queue).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.requests import Request
from starlette.responses import Response

from conveyor.server.errors import DOMAIN, FieldViolation
from conveyor.server.gateway import actions, problems
from conveyor.server.gateway.dispatch import problem_response
from conveyor.server.gateway.routes import Router

__all__ = ["SeedApi", "SeedLink", "bad_input", "seed_problem", "status_problem"]


@dataclass(frozen=True)
class SeedLink:
    """A seed route an `allowed_actions` step links: its method, href and operation id."""

    method: str
    href: str
    operation_id: str


@dataclass(frozen=True)
class SeedApi:
    """What the shared error code needs to know of one seed API."""

    name: str
    fields: Mapping[str, str] = field(default_factory=dict)
    """v1 field path -> the seed's field name (`task.kind` -> `activity_type`); a path
    under a mapped one is renamed by its prefix (`task.input.x` -> `input.x`)."""

    links: Mapping[str, Callable[[str], SeedLink | None]] = field(default_factory=dict)
    """v1 method -> the seed's own route doing the same, from the v1 resource name that
    would fill v1's route (GetTask of `projects/p/tasks/t` -> `GET /v1/queue/jobs/t`).
    A next step to a method listed here links the seed's route; others link v1's."""

    def rename(self, path: str) -> str:
        if path in self.fields:
            return self.fields[path]
        best = max((p for p in self.fields if path.startswith(p + ".")), key=len, default="")
        if best:
            return self.fields[best] + path[len(best) :]
        return path


def bad_input(violations: Sequence[FieldViolation]) -> status_pb2.Status:
    """The status of a request the adapter itself cannot translate (bad JSON, a field
    of the wrong type): INVALID_ARGUMENT with field violations, as v1 answers."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain=DOMAIN))
    bad = any_pb2.Any()
    bad.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in violations
            ]
        )
    )
    first = violations[0] if violations else FieldViolation("body", "is not valid")
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message=f"{first.field}: {first.description}{more}",
        details=[info, bad],
    )


def status_problem(
    status: status_pb2.Status,
    request: Request,
    seed: SeedApi,
    operation_id: str,
    router: Router,
    sent: Message | None = None,
    request_id: str = "",
    *,
    seed_names: bool = False,
) -> Response:
    """The problem+json answer for a refused call of `operation_id` (the seed's own
    operation), from the status v1 answered (or bad_input's: `seed_names`, its fields
    are the seed's already and are not renamed, so a body's `name` stays `name` where
    v1's `name` is the seed's `id`)."""
    instance = request.url.path
    built = problems.from_status(status, instance, request_id=request_id)
    body = built.body
    rename = (lambda path: path) if seed_names else seed.rename
    body["errors"] = [
        {"field": rename(item["field"]), "description": item["description"]}
        for item in body["errors"]
    ]
    details = actions.unpack(status.details)
    info = details.get("ErrorInfo")
    metadata: Mapping[str, str] = (
        dict(info.metadata) if isinstance(info, error_details_pb2.ErrorInfo) else {}
    )
    steps = actions.next_steps(status, details, rename=rename)
    body["allowed_actions"] = _render(
        steps, router, metadata, sent, seed, repeat=_repeat(request, instance, operation_id)
    )
    return problem_response(built, request_id or request.headers.get("x-request-id", ""))


def seed_problem(
    request: Request,
    seed: SeedApi,
    operation_id: str,
    router: Router,
    http_status: int,
    reason: str,
    detail: str,
    request_id: str = "",
    allowed_actions: Sequence[Mapping[str, str]] = (),
) -> Response:
    """A problem the adapter raises itself (an unknown route, a wrong method)."""
    built = problems.problem(http_status, reason, detail, request.url.path, request_id=request_id)
    built.body["allowed_actions"] = [dict(a) for a in allowed_actions]
    return problem_response(built, request_id)


def _repeat(request: Request, instance: str, operation_id: str) -> Callable[[], dict[str, str]]:
    def item() -> dict[str, str]:
        return {"method": request.method, "href": instance, "operation_id": operation_id}

    return item


def _render(
    steps: Sequence[actions.Step],
    router: Router,
    metadata: Mapping[str, str],
    sent: Message | None,
    seed: SeedApi,
    *,
    repeat: Callable[[], dict[str, str]],
) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    strings = problems.request_strings(sent)
    for step in steps:
        link = _seed_link(step, seed, metadata, strings)
        if step.repeat:
            out.append({"rel": step.rel, **repeat(), "hint": step.hint})
        elif link is not None:
            out.append(
                {
                    "rel": step.rel,
                    "method": link.method,
                    "href": link.href,
                    "operation_id": link.operation_id,
                    "hint": step.hint,
                }
            )
        else:
            out.extend(problems.allowed_actions(router, [step], metadata, sent))
    return out


def _seed_link(
    step: actions.Step, seed: SeedApi, metadata: Mapping[str, str], strings: Mapping[str, str]
) -> SeedLink | None:
    """The seed's own route for a step to another method, when the seed has one."""
    to_seed = seed.links.get(step.rpc)
    if to_seed is None:
        return None
    name = problems.step_resource(step, metadata, strings)
    return to_seed(name) if name else None


def seed_link(
    method: str, href: str, operation_id: str, collection: str = ""
) -> Callable[[str], SeedLink | None]:
    """A SeedApi.links entry: `href` with `{project}` and `{id}` filled from the v1 name
    `projects/{project}/<collection>/{id}`, or `{project}` alone from `projects/{project}`
    when `collection` is empty (a create or a list)."""

    def link(name: str) -> SeedLink | None:
        parts = name.split("/")
        if parts[0] != "projects" or len(parts) != (4 if collection else 2):
            return None
        if collection and parts[2] != collection:
            return None
        filled = href.format(project=parts[1], id=parts[-1] if collection else "")
        return SeedLink(method, filled, operation_id)

    return link
