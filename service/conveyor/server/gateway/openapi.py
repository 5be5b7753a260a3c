"""OpenAPI 3.1 for the REST gateway, generated from the same bindings it routes by.

Paths use one parameter per `*` of a template (`/v1/projects/{project}/tasks/{task}`),
GET/DELETE methods list every other request field as a query parameter (dotted for
nested fields, `deepObject` for maps, exploded arrays for repeated fields), bodies and
answers are `$ref`s to one schema per message in proto3 JSON form (proto field names,
enums as their names, 64-bit integers as strings, Timestamp as date-time, Duration as
`"1.5s"`), and every operation answers 4XX/5XX with application/problem+json.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.api import field_behavior_pb2, httpbody_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from conveyor.server.gateway import problems
from conveyor.server.gateway.descriptors import behaviors, enum_of, is_map, message_of
from conveyor.server.gateway.routes import Binding
from conveyor.server.gateway.transcode import SCALAR_WKT

__all__ = ["build_openapi"]

Schema = dict[str, Any]

_QUERY_DEPTH = 3
_DURATION = r"^-?[0-9]+(\.[0-9]{1,9})?s$"
_WKT: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": _DURATION},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths.",
    },
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
# Messages whose fields make no sense one by one in a query string.
_FREEFORM = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
        "google.protobuf.Empty",
    }
)
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
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
                "required": ["rel", "method", "href", "operation_id", "hint"],
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


class _Schemas:
    """components/schemas, filled as messages and enums are referenced."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def ref(self, name: str) -> Schema:
        return {"$ref": f"#/components/schemas/{name}"}

    def enum(self, enum: EnumDescriptor) -> Schema:
        name = _component_name(enum.full_name)
        if name not in self.components:
            self.components[name] = {"type": "string", "enum": [v.name for v in enum.values]}
        return self.ref(name)

    def message(self, message: Descriptor) -> Schema:
        if message.full_name in _WKT:
            return dict(_WKT[message.full_name])
        name = _component_name(message.full_name)
        if name not in self.components:
            self.components[name] = {}  # placeholder: breaks recursion
            self.components[name] = self.object(message, exclude=())
        return self.ref(name)

    def object(self, message: Descriptor, exclude: Sequence[str]) -> Schema:
        properties = {f.name: self.field(f) for f in message.fields if f.name not in exclude}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def field(self, field: FieldDescriptor) -> Schema:
        if is_map(field):
            value = self.field(message_of(field).fields_by_name["value"])
            return {"type": "object", "additionalProperties": value}
        schema = self.single(field)
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        if field_behavior_pb2.OUTPUT_ONLY in behaviors(field):
            # JSON Schema 2020-12 (OpenAPI 3.1) allows keywords beside $ref.
            schema = {**schema, "readOnly": True}
        return schema

    def single(self, field: FieldDescriptor) -> Schema:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(message_of(field))
        if field.type == FieldDescriptor.TYPE_ENUM:
            return self.enum(enum_of(field))
        return dict(_SCALARS[field.type])


def _query_parameters(
    schemas: _Schemas, message: Descriptor, prefix: str, taken: set[str], depth: int = 0
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
                        "schema": schemas.field(field),
                    }
                )
                continue
            if full_name not in SCALAR_WKT:
                if not field.is_repeated and depth < _QUERY_DEPTH and full_name not in _FREEFORM:
                    params.extend(
                        _query_parameters(schemas, message_of(field), name + ".", taken, depth + 1)
                    )
                continue
        schema = schemas.field(field)
        schema.pop("readOnly", None)
        param: Schema = {"name": name, "in": "query", "schema": schema}
        if field.is_repeated:
            param |= {"style": "form", "explode": True}
        params.append(param)
    return params


def _operation(schemas: _Schemas, binding: Binding) -> tuple[str, Schema]:
    method = binding.method
    path, path_params = binding.template.openapi()
    parameters: list[Schema] = [
        {
            "name": p.name,
            "in": "path",
            "required": True,
            "description": f"A segment of `{p.field_path}`.",
            "schema": {"type": "string", "pattern": "^[^/:]+$"},
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
    if binding.body == "*":
        body_schema = schemas.object(request, exclude=tuple(taken))
    elif binding.body:
        body_schema = schemas.field(request.fields_by_name[binding.body])
        taken.add(binding.body)
    if binding.body:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body_schema}},
        }
    if binding.body != "*":
        parameters.extend(_query_parameters(schemas, request, "", taken))
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
    operation["responses"] = {
        "200": _success(schemas, binding),
        "4XX": {"$ref": "#/components/responses/Problem"},
        "5XX": {"$ref": "#/components/responses/Problem"},
    }
    return path, operation


def _success(schemas: _Schemas, binding: Binding) -> Schema:
    method = binding.method
    output = method.output_type
    if output.full_name == httpbody_pb2.HttpBody.DESCRIPTOR.full_name:
        return {
            "description": "A file download (Content-Disposition: attachment).",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _DOWNLOADS},
        }
    if method.server_streaming:
        name = _component_name(output.full_name)
        schemas.message(output)
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
        schema = schemas.field(output.fields_by_name[binding.response_body])
    else:
        schema = schemas.message(output)
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def build_openapi(bindings: Sequence[Binding], version: str = "v1") -> dict[str, Any]:
    """The OpenAPI 3.1 document for `bindings`."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for binding in bindings:
        http_method = binding.http_method.lower()
        if http_method not in ("get", "put", "post", "delete", "patch"):
            continue
        path, operation = _operation(schemas, binding)
        paths.setdefault(path, {})[http_method] = operation
    schemas.components["Problem"] = _PROBLEM
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
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                "Problem": {
                    "description": "An error (RFC 9457 problem details).",
                    "content": {
                        problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    },
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
