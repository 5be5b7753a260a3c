"""Request bytes -> request message, decoded by the service rather than by gRPC.

gRPC's own deserializer runs before any interceptor, and a message it cannot decode
(bytes that are not the message, or a google.protobuf.Value nested deeper than the
decoder allows) ends the call with UNKNOWN and no details. The interceptor registers
every contract method without a deserializer and decodes here instead, so such a
request gets INVALID_ARGUMENT with an ErrorInfo like every other bad input. The same
goes for enum numbers the contract does not define (check_enums), for every method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from conveyor.server.errors import InvalidArgument, Violations

__all__ = ["MAX_MESSAGE_DEPTH", "Deserializer", "check_enums", "decode"]

Deserializer = Callable[[bytes], Message]

MAX_MESSAGE_DEPTH = 100
"""How deep messages may nest in a request, the protobuf decoder's own limit. A
google.protobuf.Value costs two levels per JSON level (Value, then ListValue or
Struct), so a task's input holds JSON about 48 levels deep."""


def decode(deserialize: Deserializer, raw: bytes, type_name: str) -> Message:
    """The request message of `raw`; InvalidArgument (reason MALFORMED_REQUEST) when the
    bytes are not a `type_name`, or naming the fields whose enum numbers are unknown."""
    try:
        message = deserialize(raw)
    except (DecodeError, RecursionError) as error:
        text = str(error)
        if "MaxDepth" in text or isinstance(error, RecursionError):
            detail = f"it nests messages deeper than {MAX_MESSAGE_DEPTH} levels"
        else:
            detail = "its bytes are not a valid message of that type"
        raise InvalidArgument(
            f"the request cannot be decoded as {type_name}: {detail}",
            reason="MALFORMED_REQUEST",
            metadata={"message_type": type_name, "decoder": text[:200]},
        ) from None
    check_enums(message)
    return message


# Per message type: the fields that can hold an enum number, directly or further down:
# each as (name, shape, the numbers its enum defines or None for a field to walk into,
# the enum's name). Well-known types (google.protobuf.*) are left out: a Value's
# NullValue has one value and walking a task's input for it would cost more than it
# could catch. The plan is resolved once per type (map or not, the enum's numbers) so
# that a check costs a getattr and a set lookup per field; a path is only built for a
# violation (BatchCreateTasks checks a thousand tasks per call).
_SINGLE, _REPEATED, _MAP = 0, 1, 2
_Step = tuple[str, int, frozenset[int] | None, str]
_Plan = tuple[_Step, ...]
_PLANS: dict[str, _Plan] = {}
_BUILDING: set[str] = set()


def _walked(descriptor: Descriptor | None) -> Descriptor | None:
    """`descriptor` if a check must walk into messages of it, else None."""
    if descriptor is None or descriptor.full_name.startswith("google.protobuf."):
        return None
    # A type that contains itself is walked: its plan is not known yet.
    return descriptor if descriptor.full_name in _BUILDING or _plan(descriptor) else None


def _map_value(field: FieldDescriptor) -> FieldDescriptor | None:
    entry = field.message_type
    if entry is None or not entry.GetOptions().map_entry:
        return None
    return entry.fields_by_name["value"]


def _step(field: FieldDescriptor, value: FieldDescriptor, enum: EnumDescriptor | None) -> _Step:
    mapped = value is not field
    shape = _MAP if mapped else _REPEATED if field.is_repeated else _SINGLE
    if enum is None:
        return (field.name, shape, None, "")
    return (field.name, shape, frozenset(enum.values_by_number), enum.full_name)


def _plan(descriptor: Descriptor) -> _Plan:
    found = _PLANS.get(descriptor.full_name)
    if found is not None:
        return found
    _BUILDING.add(descriptor.full_name)
    plan: list[_Step] = []
    for field in descriptor.fields:
        value = _map_value(field) or field
        if value.enum_type is not None:
            plan.append(_step(field, value, value.enum_type))
        elif _walked(value.message_type) is not None:
            plan.append(_step(field, value, None))
    _BUILDING.discard(descriptor.full_name)
    _PLANS[descriptor.full_name] = tuple(plan)
    return _PLANS[descriptor.full_name]


def check_enums(message: Message) -> None:
    """InvalidArgument naming every enum field that holds a number its enum does not
    define. proto3 enums are open, so the decoder keeps such numbers; without this
    check they reached the domain and failed there as INTERNAL."""
    v = Violations()
    _check(message, None, v)
    v.raise_if_any()


# Where a checked message sits: None for the request, else (its parent's, field name,
# key or index or None). Only a violation turns it into text.
_Path = tuple[Any, str, Any] | None


def _text(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, name, key = path
        parts.append(name if key is None else f"{name}[{key}]")
    return ".".join(reversed(parts))


def _check(message: Message, path: _Path, v: Violations) -> None:
    # Presence before getattr: getting an unset message field builds its wrapper for
    # nothing, and an empty repeated field is passed before an iterator is made (a Task
    # has seven steps, most of them unset; BatchCreateTasks checks a thousand a call).
    value: Any
    for name, shape, numbers, enum_name in _plan(cast(Descriptor, message.DESCRIPTOR)):
        if shape == _SINGLE:
            if numbers is None:
                if message.HasField(name):
                    _check(getattr(message, name), (path, name, None), v)
            elif (value := getattr(message, name)) not in numbers:
                v.add(_text((path, name, None)), f"{value} is not a value of {enum_name}")
            continue
        value = getattr(message, name)
        if not value:
            continue
        items = value.items() if shape == _MAP else enumerate(value)
        for key, item in items:
            if numbers is None:
                _check(item, (path, name, key), v)
            elif item not in numbers:
                v.add(_text((path, name, key)), f"{item} is not a value of {enum_name}")
