"""Plain Python JSON to and from google.protobuf Value and Struct.

Struct numbers are doubles on the wire, so an integral number comes back as an
int (within the 2**53 range a double holds exactly): `{"n": 1}` round-trips as
`{"n": 1}`, not `{"n": 1.0}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

_EXACT = 2**53


def to_value(data: Any) -> struct_pb2.Value:
    """The Value for a JSON-like Python object; raises TypeError for anything else."""
    value = struct_pb2.Value()
    _fill(value, data, "$")
    return value


def to_struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    """The Struct for a mapping with string keys; raises TypeError otherwise."""
    struct = struct_pb2.Struct()
    for key, item in data.items():
        if not isinstance(key, str):
            raise TypeError(f"$: object keys must be strings, not {type(key).__name__}")
        _fill(struct.fields[key], item, f"$.{key}")
    return struct


def from_value(value: struct_pb2.Value) -> Any:
    """The Python object for a Value; an unset Value is None."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _EXACT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return from_struct(value.struct_value)


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: from_value(item) for key, item in struct.fields.items()}


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
