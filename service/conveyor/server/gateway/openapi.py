"""OpenAPI 3.1 for the REST gateway, generated from the same bindings it routes by.

Paths use one parameter per `*` of a template (`/v1/projects/{project}/tasks/{task}`),
GET/DELETE methods list every other request field as a query parameter (dotted for
nested fields, `deepObject` for maps, exploded arrays for repeated fields), bodies and
answers are `$ref`s to one schema per message in proto3 JSON form (proto field names,
enums as their names, 64-bit integers as strings, Timestamp as date-time, Duration as
`"1.5s"`), and every operation declares the problem statuses it can answer with
application/problem+json. Requests and answers have their own schema variants where
they differ (see openapi_schemas), with `required` from field_behavior and the limits
of openapi_limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.api import field_behavior_pb2, httpbody_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from conveyor.server.gateway import problems
from conveyor.server.gateway.descriptors import behaviors, is_map, message_of
from conveyor.server.gateway.openapi_limits import path_pattern, resource_patterns
from conveyor.server.gateway.openapi_schemas import FREEFORM, Mode, Schemas
from conveyor.server.gateway.routes import Binding
from conveyor.server.gateway.transcode import SCALAR_WKT

__all__ = ["build_openapi"]

Schema = dict[str, Any]

_QUERY_DEPTH = 3
_DOWNLOADS = (
    "text/csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/x-ndjson",
    "application/octet-stream",
)
_PROBLEM: Schema = {
    "type": "object",
    "description": "An RFC 9457 problem built from the call's google.rpc.Status.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "The ErrorInfo reason in snake_case."},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                "required": ["field", "description"],
            },
        },
        "retry_after_seconds": {"type": "number"},
        "allowed_actions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "rel": {"type": "string"},
                    "method": {"type": "string"},
                    "href": {"type": "string"},
                    "operation_id": {"type": "string"},
                    "hint": {"type": "string"},
                },
                # A step that links no route (`authenticate`: send another key) has
                # only rel and hint; the others come with a route to call.
                "required": ["rel", "hint"],
            },
        },
        "preconditions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "subject": {"type": "string"},
                    "description": {"type": "string"},
                },
            },
        },
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": [
        "type",
        "title",
        "status",
        "detail",
        "code",
        "instance",
        "errors",
        "allowed_actions",
    ],
}


def _component_name(full_name: str) -> str:
    return full_name.removeprefix("conveyor.v1.")


# The problem statuses every operation declares (problems.HTTP_STATUS, less 499: the
# client that closed the connection reads no answer), and what each means here.
_ERRORS = {
    400: "Bad input: the problem's errors[] name the fields.",
    401: "No or unknown API key.",
    403: "The key's role or project does not allow it.",
    404: "The resource (or its project) does not exist.",
    409: "It already exists, or a concurrent change won.",
    412: "The resource's state does not allow it (e.g. a stale lease or purge token).",
    429: "A rate limit or quota; retry_after_seconds says when to retry.",
    500: "An internal error.",
    501: "Not implemented yet.",
    503: "The service (or its database) is unavailable; retry.",
    504: "The deadline passed.",
}


def _query_parameters(
    schemas: Schemas, message: Descriptor, prefix: str, taken: set[str], depth: int = 0
) -> list[Schema]:
    params: list[Schema] = []
    for field in message.fields:
        name = prefix + field.name
        if name in taken:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            full_name = message_of(field).full_name
            if is_map(field):
                params.append(
                    {
                        "name": name,
                        "in": "query",
                        "style": "deepObject",
                        "explode": True,
                        "schema": schemas.field(field, Mode.IN),
                    }
                )
                continue
            if full_name not in SCALAR_WKT:
                if not field.is_repeated and depth < _QUERY_DEPTH and full_name not in FREEFORM:
                    params.extend(
                        _query_parameters(schemas, message_of(field), name + ".", taken, depth + 1)
                    )
                continue
        schema = schemas.field(field, Mode.IN)
        schema.pop("readOnly", None)
        param: Schema = {"name": name, "in": "query", "schema": schema}
        if "description" in schema:
            param["description"] = schema.pop("description")
        if not prefix and field_behavior_pb2.REQUIRED in behaviors(field):
            param["required"] = True
        if field.is_repeated:
            param |= {"style": "form", "explode": True}
        params.append(param)
    return params


def _is_update(binding: Binding) -> bool:
    """An AIP-134 Update: its body is the resource, patched by update_mask."""
    fields = binding.method.input_type.fields_by_name
    mask = fields.get("update_mask")
    return (
        mask is not None
        and mask.type == FieldDescriptor.TYPE_MESSAGE
        and message_of(mask).full_name == "google.protobuf.FieldMask"
        and binding.body not in ("", "*")
    )


def _update_mask(resource: Descriptor) -> Schema:
    """The update_mask of an Update: `*`, or its resource's writable fields, comma-separated
    (paths inside a message field, such as spec.expression, are accepted too)."""
    writable = [
        f.name
        for f in resource.fields
        if not {
            field_behavior_pb2.OUTPUT_ONLY,
            field_behavior_pb2.IDENTIFIER,
            field_behavior_pb2.IMMUTABLE,
        }
        & behaviors(f)
    ]
    one = "(?:" + "|".join(writable) + ")"
    return {
        "type": "string",
        "pattern": f"^(?:\\*|{one}(?:,{one})*)$",
        "description": "Fields to change: " + ", ".join(writable) + "; or *. "
        "Absent: the fields present in the body (AIP-134).",
    }


def _operation(schemas: Schemas, binding: Binding) -> tuple[str, Schema]:
    method = binding.method
    path, path_params = binding.template.openapi()
    parameters: list[Schema] = [
        {
            "name": p.name,
            "in": "path",
            "required": True,
            "description": f"A segment of `{p.field_path}`.",
            "schema": {"type": "string", "pattern": path_pattern(p.name)},
        }
        for p in path_params
    ]
    taken = set(binding.path_fields)
    request = method.input_type
    operation: Schema = {
        "operationId": binding.operation_id,
        "tags": [method.containing_service.name],
        "summary": f"{method.containing_service.name}.{method.name}",
        "description": f"gRPC `/{method.containing_service.full_name}/{method.name}`.",
    }
    mode = Mode.PATCH if _is_update(binding) else Mode.IN
    if binding.body == "*":
        body_schema = schemas.object(request, tuple(taken), mode)
        body_required = "required" in body_schema
    elif binding.body:
        body_field = request.fields_by_name[binding.body]
        body_schema = schemas.field(body_field, mode)
        body_required = field_behavior_pb2.REQUIRED in behaviors(body_field)
        taken.add(binding.body)
    if binding.body:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body_schema}},
        }
    if binding.body != "*":
        parameters.extend(_query_parameters(schemas, request, "", taken))
    if mode is Mode.PATCH:
        for param in parameters:
            if param["name"] == "update_mask":
                param["schema"] = _update_mask(message_of(request.fields_by_name[binding.body]))
    if method.server_streaming and "after" in request.fields_by_name:
        parameters.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "description": "Resume after this event id (overrides `after`).",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        )
    operation["parameters"] = parameters
    responses: Schema = {"200": _success(schemas, binding)}
    if method.output_type.full_name == httpbody_pb2.HttpBody.DESCRIPTOR.full_name:
        responses["204"] = {"description": "Nothing to export."}
    for status in _ERRORS:
        responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
    if binding.body:
        responses["413"] = {"$ref": "#/components/responses/Problem413"}
    operation["responses"] = dict(sorted(responses.items()))
    return path, operation


def _success(schemas: Schemas, binding: Binding) -> Schema:
    method = binding.method
    output = method.output_type
    if output.full_name == httpbody_pb2.HttpBody.DESCRIPTOR.full_name:
        return {
            "description": "A file download (Content-Disposition: attachment).",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _DOWNLOADS},
        }
    if method.server_streaming:
        name = _component_name(output.full_name)
        schemas.message(output, Mode.OUT)
        return {
            "description": (
                f"A stream of {name}: Server-Sent Events when Accept asks for "
                f"text/event-stream, else one {name} JSON object per line."
            ),
            "content": {
                "text/event-stream": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    if binding.response_body:
        schema = schemas.field(output.fields_by_name[binding.response_body], Mode.OUT)
    else:
        schema = schemas.message(output, Mode.OUT)
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _problem_responses() -> dict[str, Schema]:
    described = {**_ERRORS, 413: "The request body is over the size limit."}
    return {
        f"Problem{status}": {
            "description": f"{description} (RFC 9457 problem details)",
            "content": {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, description in sorted(described.items())
    }


def build_openapi(bindings: Sequence[Binding], version: str = "v1") -> dict[str, Any]:
    """The OpenAPI 3.1 document for `bindings`."""
    files = {b.method.containing_service.file for b in bindings}
    schemas = Schemas(resource_patterns(sorted(files, key=lambda f: f.name)))
    paths: dict[str, dict[str, Any]] = {}
    for binding in bindings:
        http_method = binding.http_method.lower()
        if http_method not in ("get", "put", "post", "delete", "patch"):
            continue
        path, operation = _operation(schemas, binding)
        paths.setdefault(path, {})[http_method] = operation
    schemas.add("Problem", _PROBLEM)
    components = schemas.finish(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conveyor REST API",
            "version": version,
            "description": (
                "Generated from the conveyor.v1 protos' google.api.http rules. Send "
                "`Authorization: Bearer <api key>`. Errors are RFC 9457 problems "
                f"({problems.PROBLEM_TYPE_BASE}<reason>). Requests accept proto or "
                "lowerCamel field names; answers use proto names and always include "
                "scalar, list and map fields. Optional headers: X-Request-Id, "
                "X-Request-Timeout (seconds)."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": sorted(
            ({"name": t} for t in {b.method.containing_service.name for b in bindings}),
            key=lambda t: t["name"],
        ),
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": _problem_responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
