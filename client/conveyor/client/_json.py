"""Plain Python JSON to and from google.protobuf Value and Struct, and messages as JSON.

Struct numbers are doubles on the wire, so an integral number comes back as an
int (within the 2**53 range a double holds exactly): `{"n": 1}` round-trips as
`{"n": 1}`, not `{"n": 1.0}`. This module is the one place that rule lives: the
client, the CLI, the REST gateway, webhooks, stored results and command results all
render JSON through `from_value`, `from_struct` or `message_to_json`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

_EXACT = 2**53


def number(value: float) -> int | float:
    """A JSON number as Python would write it: integral values within +-2**53 as an
    int (`5`, not `5.0`), the rest unchanged."""
    if value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    return value


def integral(data: Any) -> Any:
    """`data` (plain JSON data) with every number passed through `number`."""
    if isinstance(data, float):
        return number(data)
    if isinstance(data, dict):
        return {key: integral(item) for key, item in data.items()}
    if isinstance(data, list):
        return [integral(item) for item in data]
    return data


def message_to_json(message: Message, **options: Any) -> Any:
    """A message's proto3 JSON form (json_format.MessageToDict, same options), with
    the numbers of its Struct and Value fields integral where they are (see `number`)."""
    return integral(json_format.MessageToDict(message, **options))


def to_value(data: Any) -> struct_pb2.Value:
    """The Value for a JSON-like Python object; raises TypeError for anything else."""
    value = struct_pb2.Value()
    _fill(value, data, "$")
    return value


def to_struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    """The Struct for a mapping with string keys; raises TypeError otherwise."""
    struct = struct_pb2.Struct()
    fill_struct(struct, data)
    return struct


def fill_struct(struct: struct_pb2.Struct, data: Mapping[str, Any]) -> None:
    """Adds a mapping with string keys to `struct` in place (a message's Struct field,
    without building one and copying it in); TypeError otherwise, `struct` then partly
    filled."""
    for key, item in data.items():
        if not isinstance(key, str):
            raise TypeError(f"$: object keys must be strings, not {type(key).__name__}")
        _fill(struct.fields[key], item, f"$.{key}")


def from_value(value: struct_pb2.Value) -> Any:
    """The Python object for a Value; an unset Value is None.

    The server reads every task input through here: the commonest kinds are tested
    first and `number` is inlined (~20% less per call, more for nested objects)."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        found = value.number_value
        if found.is_integer() and -_EXACT <= found <= _EXACT:
            return int(found)
        return found
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return None  # unset, or null_value


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    fields = struct.fields
    # Not .items(): the map's ItemsView iterates in Python, a key and a lookup at a time.
    return {key: from_value(fields[key]) for key in fields}


def _fill(value: struct_pb2.Value, data: Any, path: str) -> None:
    if data is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, int | float):
        if not math.isfinite(data):
            raise TypeError(f"{path}: {data!r} is not a JSON number")
        value.number_value = data
    elif isinstance(data, str):
        value.string_value = data
    elif isinstance(data, Mapping):
        fields = value.struct_value.fields
        if not data:
            value.struct_value.SetInParent()
        for key, item in data.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: object keys must be strings, not {type(key).__name__}")
            _fill(fields[key], item, f"{path}.{key}")
        return
    elif isinstance(data, list | tuple):
        values = value.list_value
        values.SetInParent()
        for index, item in enumerate(data):
            _fill(values.values.add(), item, f"{path}[{index}]")
    else:
        raise TypeError(f"{path}: {type(data).__name__} is not JSON")
