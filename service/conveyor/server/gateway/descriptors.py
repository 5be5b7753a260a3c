"""Typed access to descriptor parts the protobuf stubs leave Optional or untyped."""

from __future__ import annotations

from typing import Any, cast

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
)

__all__ = ["behaviors", "enum_of", "http_rule", "is_map", "message_of"]

# The googleapis stubs type these extensions as plain FieldDescriptors, which the
# Extensions mapping does not accept; they are extension handles at run time.
_HTTP: Any = annotations_pb2.http
_FIELD_BEHAVIOR: Any = field_behavior_pb2.field_behavior


def message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    message = field.message_type
    assert message is not None, f"{field.full_name} is not a message field"
    return message


def enum_of(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    enum = field.enum_type
    assert enum is not None, f"{field.full_name} is not an enum field"
    return enum


def is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and message_of(field).GetOptions().map_entry


def http_rule(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    """The method's google.api.http rule, or None."""
    options = method.GetOptions()
    if not options.HasExtension(_HTTP):
        return None
    return cast(http_pb2.HttpRule, options.Extensions[_HTTP])


def behaviors(field: FieldDescriptor) -> set[int]:
    """The field's google.api.field_behavior values."""
    return set(cast(list[int], field.GetOptions().Extensions[_FIELD_BEHAVIOR]))
