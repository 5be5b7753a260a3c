"""The HTTP side shared by every seed module: routes, JSON bodies, answers.

A seed route is a path with one handler per method. The wrapper resolves the caller
(access.py), runs the handler, and turns a refused v1 call or an untranslatable request
into the seed's problem+json (problems.py); any other method gets 405 problem+json.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.client._limits import MAX_REST_BODY_BYTES
from conveyor.server.compat.access import Anonymous, caller_of
from conveyor.server.compat.problems import SeedApi, bad_input, seed_problem, status_problem
from conveyor.server.compat.v1 import V1, Caller, V1Failed
from conveyor.server.errors import FieldViolation
from conveyor.server.gateway.jsonform import dumps

__all__ = [
    "BadSeedInput",
    "CompatContext",
    "Handler",
    "Operation",
    "SeedProblem",
    "json_response",
    "read_json",
    "seed_route",
]


@dataclass(frozen=True)
class CompatContext:
    """What every seed module is given: the v1 caller and the anonymous access."""

    v1: V1
    anonymous: Anonymous | None = None


class BadSeedInput(Exception):
    """A request the adapter cannot translate (not JSON, a field of the wrong type)."""

    def __init__(self, *violations: FieldViolation) -> None:
        super().__init__(violations[0].description if violations else "bad input")
        self.violations = list(violations)

    @classmethod
    def of(cls, field: str, description: str) -> BadSeedInput:
        return cls(FieldViolation(field, description))


class SeedProblem(Exception):
    """A problem the adapter answers itself, in the seed's terms (an id that cannot be
    one of the seed's resources, say), with its own next steps."""

    def __init__(
        self,
        http_status: int,
        reason: str,
        detail: str,
        allowed_actions: Sequence[Mapping[str, str]] = (),
    ) -> None:
        super().__init__(detail)
        self.http_status = http_status
        self.reason = reason
        self.detail = detail
        self.allowed_actions = allowed_actions


Handler = Callable[[Request, Caller], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One method of a seed route: its handler and the seed's operation id."""

    operation_id: str
    handler: Handler


def seed_route(
    ctx: CompatContext, seed: SeedApi, path: str, operations: Mapping[str, Operation]
) -> Route:
    """A Starlette route answering `operations` ({"POST": Operation(...)}) at `path`."""
    allowed = ", ".join(sorted(operations))

    async def endpoint(request: Request) -> Response:
        operation = operations.get(request.method)
        caller = caller_of(request, ctx.anonymous, ctx.v1.gateway.trace_context(request))
        if operation is None:
            response = seed_problem(
                request,
                seed,
                "",
                ctx.v1.router,
                405,
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed here; use {allowed}",
                request_id=caller.request_id,
            )
            response.headers["Allow"] = allowed
            return response
        try:
            return await operation.handler(request, caller)
        except V1Failed as failed:
            return status_problem(
                failed.status,
                request,
                seed,
                operation.operation_id,
                ctx.v1.router,
                sent=failed.request,
                request_id=caller.request_id,
            )
        except BadSeedInput as bad:
            return status_problem(
                bad_input(bad.violations),
                request,
                seed,
                operation.operation_id,
                ctx.v1.router,
                request_id=caller.request_id,
                seed_names=True,
            )
        except SeedProblem as problem:
            return seed_problem(
                request,
                seed,
                operation.operation_id,
                ctx.v1.router,
                problem.http_status,
                problem.reason,
                problem.detail,
                request_id=caller.request_id,
                allowed_actions=problem.allowed_actions,
            )
        except ClientDisconnect:
            return Response(status_code=499)

    # Every method reaches the endpoint, which answers 405 itself as problem+json.
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Route(path, endpoint, methods=methods)


async def read_json(request: Request) -> Any:
    """The request's JSON body; BadSeedInput when it is missing, too large or not JSON."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REST_BODY_BYTES:
            raise BadSeedInput.of("body", f"must be at most {MAX_REST_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadSeedInput.of("body", "is required: a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadSeedInput.of("body", f"is not valid JSON ({error})") from None


def json_response(value: Any, status_code: int = 200, request_id: str = "") -> Response:
    headers = {"X-Request-Id": request_id} if request_id else None
    return Response(
        dumps(value), status_code=status_code, media_type="application/json", headers=headers
    )
