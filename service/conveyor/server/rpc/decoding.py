"""Request bytes -> request message, decoded by the service rather than by gRPC.

gRPC's own deserializer runs before any interceptor, and a message it cannot decode
(bytes that are not the message, or a google.protobuf.Value nested deeper than the
decoder allows) ends the call with UNKNOWN and no details. The interceptor registers
every contract method without a deserializer and decodes here instead, so such a
request gets INVALID_ARGUMENT with an ErrorInfo like every other bad input.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError, Message

from conveyor.server.errors import InvalidArgument

__all__ = ["MAX_MESSAGE_DEPTH", "Deserializer", "decode"]

Deserializer = Callable[[bytes], Message]

MAX_MESSAGE_DEPTH = 100
"""How deep messages may nest in a request, the protobuf decoder's own limit. A
google.protobuf.Value costs two levels per JSON level (Value, then ListValue or
Struct), so a task's input holds JSON about 48 levels deep."""


def decode(deserialize: Deserializer, raw: bytes, type_name: str) -> Message:
    """The request message of `raw`; InvalidArgument (reason MALFORMED_REQUEST) when the
    bytes are not a `type_name`."""
    try:
        return deserialize(raw)
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
