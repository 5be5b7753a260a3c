"""The spellings REST input may use beside the canonical ones: an enum value without
its prefix or in any case (`failed` for TASK_STATE_FAILED), and a field mask in proto
(`display_name`) or JSON (`displayName`) form."""

from __future__ import annotations

import re

from google.protobuf.descriptor import EnumDescriptor

__all__ = ["enum_name", "mask_json"]


def enum_name(enum: EnumDescriptor, text: str) -> str | None:
    """The value name for `text`: the full name (`TASK_STATE_FAILED`) or, in any case,
    the name without the enum's prefix (`failed`, `FAILED`)."""
    if text in enum.values_by_name:
        return text
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    for candidate in (text.upper(), prefix + text.upper()):
        if candidate in enum.values_by_name:
            return candidate
    return None


def mask_json(text: str) -> str:
    """A FieldMask as its JSON string, from proto (`display_name`) or JSON (`displayName`)
    paths: json_format only takes the lowerCamel form."""
    return ",".join(
        re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path.strip())
        for path in text.split(",")
        if path.strip()
    )
