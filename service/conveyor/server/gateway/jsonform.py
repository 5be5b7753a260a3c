"""How the gateway writes messages as JSON.

Proto field names (`create_time`, not `createTime`), so REST answers read like the
protos and the rest of the API docs. Fields without presence are always printed
(`"priority": 0`, `"labels": {}`, `"tasks": []`, `"next_page_token": ""`), so a
client can index any scalar, list or map field without checking that it is there;
only message fields (timestamps, durations, sub-messages) and oneof members that are
unset are left out. Enums are their names, 64-bit integers are strings, as proto3 JSON
has them. Integral numbers in Struct and Value fields are integers (`5`, not `5.0`),
by the one rule in conveyor.client._json.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message

from conveyor.client._json import message_to_json

__all__ = ["dumps", "to_json"]


def to_json(message: Message) -> Any:
    """The JSON value (dict for most messages) of `message`."""
    return message_to_json(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
