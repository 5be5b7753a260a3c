"""Message size limits: the one set the server, the gateway and the clients agree on.

    MAX_REQUEST_BYTES   32 MiB  the server receives; clients and the gateway send at most
    MAX_RESPONSE_BYTES  64 MiB  the server sends; clients and the gateway receive at least
    MAX_PAGE_BYTES      63 MiB  a ListTasks page stops before this (fewer tasks than
                                page_size, with a next_page_token; view BASIC pages stay small)
    MAX_BATCH_BYTES     16 MiB  the requests of one BatchCreateTasks together; the answer
                                echoes them, so it stays under MAX_RESPONSE_BYTES
    MAX_TASK_INPUT_BYTES 1 MiB  a task's input, as JSON (its result likewise)
    MAX_REST_BODY_BYTES 32 MiB  a REST request body; larger ones are 413

DEFAULT_TIMEOUT (30 s) is the deadline of a client's call when the caller gives none.

A request over MAX_REQUEST_BYTES is refused by gRPC itself (RESOURCE_EXHAUSTED) and by
the gateway before it forwards anything (413). The README lists these limits.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BATCH_BYTES",
    "MAX_PAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_REST_BODY_BYTES",
    "MAX_TASK_INPUT_BYTES",
]

MiB = 1024 * 1024

DEFAULT_TIMEOUT = 30.0

MAX_REQUEST_BYTES = 32 * MiB
MAX_RESPONSE_BYTES = 64 * MiB
MAX_PAGE_BYTES = MAX_RESPONSE_BYTES - MiB
MAX_BATCH_BYTES = 16 * MiB
MAX_TASK_INPUT_BYTES = 1 * MiB
MAX_REST_BODY_BYTES = MAX_REQUEST_BYTES
