"""How the gateway writes messages as JSON.

Proto field names (`create_time`, not `createTime`), so REST answers read like the
protos and the rest of the API docs. Fields without presence are always printed
(`"priority": 0`, `"labels": {}`, `"tasks": []`, `"next_page_token": ""`), so a
client can index any scalar, list or map field without checking that it is there;
only message fields (timestamps, durations, sub-messages) and oneof members that are
unset are left out. Enums are their names, 64-bit integers are strings, as proto3 JSON
has them.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

__all__ = ["dumps", "to_json"]


def to_json(message: Message) -> Any:
    """The JSON value (dict for most messages) of `message`."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
