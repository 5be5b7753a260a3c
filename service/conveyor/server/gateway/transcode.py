"""HTTP request -> request message: path variables, JSON body and query string.

The body is read with google.protobuf.json_format, so it accepts both the proto field
names (`page_size`) and their lowerCamel JSON names (`pageSize`), enum names or
numbers, RFC 3339 timestamps and `1.5s` durations. Every field the path and the body
do not set may come from the query string:

    filter.states=TASK_STATE_FAILED&filter.states=TASK_STATE_CANCELLED   repeated
    filter.labels[env]=prod                                              map entry
    filter.create_time_after=2026-01-01T00:00:00Z                        Timestamp
    wait_timeout=30s   atomic=true   page_size=50                        scalars

Anything that cannot be read becomes a `BadInput` (a 400 with field violations) and
nothing is forwarded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from conveyor.server.domain import update_mask
from conveyor.server.errors import FieldViolation
from conveyor.server.gateway.descriptors import enum_of, is_map, message_of
from conveyor.server.gateway.routes import Binding
from conveyor.server.gateway.spellings import enum_name, mask_json
from conveyor.server.rpc.decoding import MAX_MESSAGE_DEPTH

__all__ = ["SCALAR_WKT", "BadInput", "build_request", "find_field"]

# Well-known message types whose JSON form is a scalar (a string, number or bool), so
# they can be given as one query parameter.
SCALAR_WKT = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)
_NUMBER_WRAPPERS = frozenset(
    {"google.protobuf.DoubleValue", "google.protobuf.FloatValue"},
)
_FIELD_MASK = "google.protobuf.FieldMask"
_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})
_KEY = re.compile(
    # A map key runs to the last `]`, so a key may hold brackets itself.
    r"(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:\[(?P<key>.*)\])?",
    re.DOTALL,
)
_FAILED = re.compile(r"Failed to parse ([A-Za-z0-9_]+) field")


class BadInput(Exception):
    """The HTTP request cannot become a request message (answered 400, not forwarded)."""

    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.violations = list(violations)

    @classmethod
    def of(cls, field: str, description: str) -> BadInput:
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


def find_field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by proto name or lowerCamel JSON name."""
    field = descriptor.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in descriptor.fields if f.json_name == name), None)


def build_request(
    binding: Binding,
    path_values: dict[str, str],
    query: Sequence[tuple[str, str]],
    body: bytes,
) -> Message:
    """The request message for one HTTP request; raises BadInput."""
    request = GetMessageClass(binding.method.input_type)()
    data = _merge_body(request, binding.body, body) if binding.body else None
    taken = set(binding.path_fields)
    if binding.body == "*":
        if query:
            name = query[0][0]
            raise BadInput.of(name, "this method takes its fields in the JSON body")
    else:
        if binding.body:
            taken.add(binding.body)
        _merge_query(request, query, taken)
    for field_path, value in path_values.items():
        _set_path_field(request, field_path, value)
    _imply_update_mask(request, binding.body, data)
    return request


def _imply_update_mask(request: Message, body_field: str, data: Any) -> None:
    """An Update without update_mask changes the fields present in its JSON body
    (AIP-134): their paths become the mask here, since keys set to zero values do not
    survive into the message (see domain/update_mask.py)."""
    descriptor = cast(Descriptor, request.DESCRIPTOR)
    mask_field = descriptor.fields_by_name.get("update_mask")
    if (
        mask_field is None
        or mask_field.message_type is None
        or mask_field.message_type.full_name != _FIELD_MASK
        or request.HasField("update_mask")
        or not isinstance(data, dict)
    ):
        return
    resource = descriptor.fields_by_name.get(body_field)
    if resource is None or resource.type != FieldDescriptor.TYPE_MESSAGE:
        return
    paths = update_mask.paths_from_json(data, message_of(resource))
    cast(Any, request).update_mask.paths.extend(paths)


def _parse_error(error: json_format.ParseError, prefix: str) -> BadInput:
    text = str(error).replace("\n", " ")
    # json_format nests "Failed to parse <field> field: " once per level; the chain is
    # the path of the bad field, in the spelling the caller used (made snake_case).
    chain = [_snake(name) for name in _FAILED.findall(text)]
    field = ".".join([*([prefix] if prefix else []), *chain]) or prefix or "body"
    return BadInput(f"the request does not fit {field}: {text}", [FieldViolation(field, text)])


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _merge_body(request: Message, body_field: str, raw: bytes) -> Any:
    """Merges the JSON body into the request; returns the JSON value it read."""
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput.of("body", f"not valid JSON: {error}") from None
    except RecursionError:
        # Python's JSON reader recurses per level; the request could never be decoded
        # anyway (messages nest at most MAX_MESSAGE_DEPTH deep).
        raise BadInput.of(
            "body", f"is nested too deeply (at most {MAX_MESSAGE_DEPTH} levels)"
        ) from None
    target, prefix = request, ""
    if body_field != "*":
        field = request.DESCRIPTOR.fields_by_name[body_field]
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            target, prefix = getattr(request, body_field), body_field
        else:
            # A scalar or repeated body field: read it as that field of the request.
            data = {body_field: data}
    if not isinstance(data, dict) and (
        target is request or target.DESCRIPTOR.full_name not in _JSON_ANY
    ):
        raise BadInput.of(prefix or "body", "must be a JSON object")
    _normalise(data, cast(Descriptor, target.DESCRIPTOR), f"{prefix}." if prefix else "")
    try:
        json_format.ParseDict(data, target)
    except json_format.ParseError as error:
        raise _parse_error(error, prefix) from None
    except RecursionError:
        raise BadInput.of(
            prefix or "body", f"is nested too deeply (at most {MAX_MESSAGE_DEPTH} levels)"
        ) from None
    return data


# Message types whose JSON form need not be an object.
_JSON_ANY = SCALAR_WKT | {
    "google.protobuf.Value",
    "google.protobuf.ListValue",
}


def _normalise(data: Any, descriptor: Descriptor, prefix: str = "") -> None:
    """Rewrites a JSON body in place to what json_format reads: FieldMask strings with
    proto paths (see _mask_json) and short enum names (see enum_name).

    A field set to null is refused: the OpenAPI document types no field as nullable
    (to leave a field as it is, leave it out; to clear it, send its empty value).
    """
    if not isinstance(data, dict) or descriptor.full_name in _JSON_ANY:
        return
    for key, value in data.items():
        field = find_field(descriptor, key) if isinstance(key, str) else None
        if field is None:
            continue
        path = f"{prefix}{field.name}"
        if value is None and not (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and message_of(field).full_name == "google.protobuf.Value"
        ):
            raise BadInput.of(path, "is null; leave it out, or give a value")
        if field.type == FieldDescriptor.TYPE_ENUM:
            if isinstance(value, str):
                data[key] = enum_name(enum_of(field), value) or value
            elif isinstance(value, list):
                data[key] = [
                    enum_name(enum_of(field), v) or v if isinstance(v, str) else v for v in value
                ]
            continue
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if message_of(field).full_name == _FIELD_MASK and isinstance(value, str):
            data[key] = mask_json(value)
        elif is_map(field):
            continue
        elif field.is_repeated and isinstance(value, list):
            for index, item in enumerate(value):
                _normalise(item, message_of(field), f"{path}[{index}].")
        else:
            _normalise(value, message_of(field), f"{path}.")


def _scalar(field: FieldDescriptor, name: str, text: str) -> Any:
    """One query value as the JSON value json_format expects for `field`.

    Checked here, parameter by parameter, so an error names the parameter.
    """
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full_name = message_of(field).full_name
        if full_name not in SCALAR_WKT:
            raise BadInput.of(name, f"is a message; set its fields as {name}.<field>")
        value: Any = text
        if full_name == _FIELD_MASK:
            value = mask_json(text)
        elif full_name == "google.protobuf.BoolValue":
            value = _bool(name, text)
        elif full_name in _NUMBER_WRAPPERS:
            value = _float(name, text)
        try:
            json_format.ParseDict(value, GetMessageClass(message_of(field))())
        except json_format.ParseError as error:
            raise BadInput.of(name, str(error)) from None
        return value
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _bool(name, text)
    if field.type in _FLOATS:
        return _float(name, text)
    if field.type == FieldDescriptor.TYPE_ENUM:
        found = enum_name(enum_of(field), text)
        if found is not None:
            return found
        if re.fullmatch(r"-?[0-9]{1,10}", text):
            return int(text)
        names = ", ".join(enum_of(field).values_by_name)
        raise BadInput.of(name, f"{text!r} is not one of {names}")
    bounds = _INT_BOUNDS.get(field.type)
    if bounds is not None:
        try:
            number = int(text)
        except ValueError:
            raise BadInput.of(name, f"{text!r} is not an integer") from None
        if not bounds[0] <= number <= bounds[1]:
            raise BadInput.of(name, f"{number} is out of range")
        return number
    # Strings, and bytes (base64, which json_format checks).
    return text


def _bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadInput.of(name, f"{text!r} is not a boolean (true or false)")


def _float(name: str, text: str) -> float | str:
    if text in ("NaN", "Infinity", "-Infinity"):
        return text
    try:
        return float(text)
    except ValueError:
        raise BadInput.of(name, f"{text!r} is not a number") from None


def _merge_query(request: Message, query: Sequence[tuple[str, str]], taken: set[str]) -> None:
    data: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    for name, text in query:
        try:
            _put(data, cast(Descriptor, request.DESCRIPTOR), name, text, taken)
        except BadInput as error:
            violations.extend(error.violations)
    if violations:
        raise BadInput(
            f"bad query parameter {violations[0].field}: {violations[0].description}",
            violations,
        )
    if not data:
        return
    try:
        json_format.ParseDict(data, request)
    except json_format.ParseError as error:
        raise _parse_error(error, "") from None


def _put(data: dict[str, Any], root: Descriptor, name: str, text: str, taken: set[str]) -> None:
    matched = _KEY.fullmatch(name)
    if matched is None:
        raise BadInput.of(name, "is not a field path such as `filter.states`")
    parts = matched.group("path").split(".")
    map_key = matched.group("key")
    descriptor, node = root, data
    proto_path: list[str] = []
    for index, part in enumerate(parts):
        field = find_field(descriptor, part)
        if field is None:
            raise BadInput.of(name, f"unknown field {part!r} of {descriptor.name}")
        proto_path.append(field.name)
        dotted = ".".join(proto_path)
        if dotted in taken or any(dotted.startswith(t + ".") for t in taken):
            raise BadInput.of(name, "is set by the path or the body, not the query")
        last = index == len(parts) - 1
        map_field = is_map(field)
        if not last:
            if field.type != FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
                raise BadInput.of(name, f"{part!r} has no fields")
            descriptor = message_of(field)
            child = node.setdefault(field.name, {})
            if not isinstance(child, dict):
                raise BadInput.of(name, "conflicts with another parameter")
            node = child
            continue
        if map_field:
            if map_key is None:
                raise BadInput.of(name, f"is a map; give entries as {name}[key]=value")
            value_field = message_of(field).fields_by_name["value"]
            entries = node.setdefault(field.name, {})
            if map_key in entries:
                raise BadInput.of(name, "is given more than once")
            entries[map_key] = _scalar(value_field, name, text)
            return
        if map_key is not None:
            raise BadInput.of(name, "only map fields take [key]")
        value = _scalar(field, name, text)
        if field.is_repeated:
            node.setdefault(field.name, []).append(value)
        elif field.name in node:
            raise BadInput.of(name, "is given more than once")
        else:
            node[field.name] = value


def _set_path_field(request: Message, field_path: str, value: str) -> None:
    target = request
    parts = field_path.split(".")
    for part in parts[:-1]:
        target = getattr(target, part)
    setattr(target, parts[-1], value)
