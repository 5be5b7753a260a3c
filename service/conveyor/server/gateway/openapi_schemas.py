"""components/schemas of the OpenAPI document: one schema per message and enum, in
proto3 JSON form, in up to three variants.

- `OUT`, what answers carry: every enum value, and every field the gateway always
  prints (fields without presence) or that the proto calls REQUIRED is `required`.
- `IN`, what requests send: enums without their `*_UNSPECIFIED` value, and the
  proto's REQUIRED fields (field_behavior) `required`.
- `PATCH`, the resource of an Update (AIP-134): like `IN` with nothing required, since
  a patch names only the fields it changes.

A variant used alone keeps the plain name (`TaskFilter`, `Project`); a message or enum
used in several gets `Input` / `Patch` suffixes on its request variants (`Task` and
`TaskInput`), so generated clients type answers and requests each as they are.
Field limits (patterns, ranges) come from openapi_limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from conveyor.server.gateway.descriptors import behaviors, enum_of, is_map, message_of
from conveyor.server.gateway.openapi_limits import (
    MESSAGE_RULES,
    NO_NUL,
    REQUEST_DURATION,
    VALUE_RULES,
    field_limits,
    label_map,
)

__all__ = ["FREEFORM", "Mode", "Schemas"]

Schema = dict[str, Any]

# Durations are never negative here.
_DURATION = r"^[0-9]+(\.[0-9]{1,9})?s$"
_INT64 = {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"}
_WKT: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": _DURATION},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    "google.protobuf.Struct": {
        "type": "object",
        "description": "A JSON object without NUL characters.",
    },
    "google.protobuf.Value": {"description": "Any JSON value without NUL characters."},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
# Messages whose fields make no sense one by one in a query string.
FREEFORM = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
        "google.protobuf.Empty",
    }
)
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_REF = "#/components/schemas/"
_DURATION_TYPE = "google.protobuf.Duration"


class Mode(Enum):
    OUT = ""
    IN = "Input"
    PATCH = "Patch"


def _name(full_name: str) -> str:
    return full_name.removeprefix("conveyor.v1.")


class Schemas:
    """Fills components/schemas as messages and enums are referenced."""

    def __init__(self, resources: dict[str, str]) -> None:
        self._resources = resources
        # (plain name, mode) -> schema; named in finish().
        self._variants: dict[tuple[str, Mode], Schema] = {}

    def _ref(self, name: str, mode: Mode) -> Schema:
        return {"$ref": f"{_REF}{name}@{mode.name}"}

    def enum(self, enum: EnumDescriptor, mode: Mode) -> Schema:
        mode = Mode.OUT if mode is Mode.OUT else Mode.IN
        key = (_name(enum.full_name), mode)
        if key not in self._variants:
            values = [v.name for v in enum.values]
            if mode is not Mode.OUT:
                values = [v for v in values if not v.endswith("_UNSPECIFIED")]
            self._variants[key] = {"type": "string", "enum": values}
        return self._ref(*key)

    def message(self, message: Descriptor, mode: Mode) -> Schema:
        if message.full_name in _WKT:
            return dict(_WKT[message.full_name])
        key = (_name(message.full_name), mode)
        if key not in self._variants:
            self._variants[key] = {}  # placeholder: breaks recursion
            self._variants[key] = self.object(message, (), mode)
        return self._ref(*key)

    def object(self, message: Descriptor, exclude: Sequence[str], mode: Mode) -> Schema:
        fields = [
            f
            for f in message.fields
            if f.name not in exclude and not (mode is Mode.PATCH and _immutable(f))
        ]
        schema: Schema = {
            "type": "object",
            "properties": {f.name: self.field(f, mode) for f in fields},
            "additionalProperties": False,
        }
        required = [f.name for f in fields if _required(f, mode)]
        if required:
            schema["required"] = required
        if message.full_name in MESSAGE_RULES and (
            mode is Mode.IN or (mode is Mode.PATCH and message.full_name in VALUE_RULES)
        ):
            schema |= MESSAGE_RULES[message.full_name]
        return schema

    def field(self, field: FieldDescriptor, mode: Mode) -> Schema:
        if is_map(field):
            value = self.field(message_of(field).fields_by_name["value"], mode)
            if field.name == "labels":
                return label_map(value)
            return {"type": "object", "additionalProperties": value}
        schema = self.single(field, mode)
        limits = field_limits(field, self._resources)
        if (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and message_of(field).full_name == _DURATION_TYPE
        ):
            # A duration: answers print what is stored, requests stay within the limits.
            if mode is Mode.OUT:
                limits.pop("pattern", None)
            else:
                limits.setdefault("pattern", REQUEST_DURATION)
        description = limits.pop("description", None)
        limits.pop("required", None)
        required = field_behavior_pb2.REQUIRED in behaviors(field) and mode is not Mode.PATCH
        if (
            required
            and schema.get("type") == "string"
            and not {"pattern", "maxLength"} & set(limits)
        ):
            limits.setdefault("minLength", 1)  # Required: an empty string is not given
        if mode is not Mode.OUT and schema.get("type") == "string" and "format" not in schema:
            limits.setdefault("pattern", NO_NUL)
        if limits and "$ref" not in schema:
            schema = {**schema, **limits}
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
            if "enum" in limits:
                schema["uniqueItems"] = True
            if required:
                schema["minItems"] = 1
        if description:
            schema = {**schema, "description": description}
        if field_behavior_pb2.OUTPUT_ONLY in behaviors(field):
            # JSON Schema 2020-12 (OpenAPI 3.1) allows keywords beside $ref.
            schema = {**schema, "readOnly": True}
        return schema

    def single(self, field: FieldDescriptor, mode: Mode) -> Schema:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(message_of(field), mode)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return self.enum(enum_of(field), mode)
        return dict(_SCALARS[field.type])

    def add(self, name: str, schema: Schema) -> None:
        """A component of its own (not a message), such as Problem."""
        self._variants[(name, Mode.OUT)] = schema

    def finish(self, document: Any) -> dict[str, Schema]:
        """Names the variants, rewrites the references in `document` (and in the
        components) to those names, and returns components/schemas."""
        modes: dict[str, set[Mode]] = {}
        for name, mode in self._variants:
            modes.setdefault(name, set()).add(mode)
        final = {
            f"{name}@{mode.name}": name if len(modes[name]) == 1 else name + mode.value
            for name, mode in self._variants
        }
        components = {final[f"{n}@{m.name}"]: s for (n, m), s in self._variants.items()}
        _rename(document, final)
        _rename(components, final)
        return dict(sorted(components.items()))


def _immutable(field: FieldDescriptor) -> bool:
    """Set at create only: an Update refuses it in its body (AIP-203), so a patch body
    does not offer it."""
    return field_behavior_pb2.IMMUTABLE in behaviors(field)


def _required(field: FieldDescriptor, mode: Mode) -> bool:
    if mode is Mode.PATCH:
        return False
    if field_behavior_pb2.REQUIRED in behaviors(field) or field_limits(field, {}).get("required"):
        return True
    # Answers print every field without presence (jsonform), so it is always there.
    return mode is Mode.OUT and not field.has_presence


def _rename(node: Any, final: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF) :] in final:
            node["$ref"] = _REF + final[ref[len(_REF) :]]
        for value in node.values():
            _rename(value, final)
    elif isinstance(node, list):
        for value in node:
            _rename(value, final)
