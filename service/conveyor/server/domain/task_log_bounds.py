"""How much of one attempt's log is kept: the queue's max_log_bytes and max_log_lines.

Past either bound the oldest lines are dropped (conveyor_append_task_logs, migration
0022); 0 (unset) means the server default. Kept small and apart from the log itself so
the queue settings need not import the log's machinery.
"""

from __future__ import annotations

from typing import Any

from conveyor.server.domain import update_mask
from conveyor.server.errors import Violations
from conveyor.v1 import queue_pb2

__all__ = [
    "DEFAULT_MAX_LOG_BYTES",
    "DEFAULT_MAX_LOG_LINES",
    "MAX_MAX_LOG_BYTES",
    "MAX_MAX_LOG_LINES",
    "MIN_MAX_LOG_BYTES",
    "check_queue_bounds",
]

DEFAULT_MAX_LOG_BYTES = 1024 * 1024
DEFAULT_MAX_LOG_LINES = 10_000
MIN_MAX_LOG_BYTES = 1024
MAX_MAX_LOG_BYTES = 64 * 1024 * 1024
MAX_MAX_LOG_LINES = 1_000_000


def check_queue_bounds(
    v: Violations, merged: queue_pb2.Queue, mask: update_mask.Mask, changes: dict[str, Any]
) -> None:
    """Adds the masked bounds to `changes` (0: back to the default), or violations."""
    if "max_log_bytes" in mask:
        value = merged.max_log_bytes
        if value and not MIN_MAX_LOG_BYTES <= value <= MAX_MAX_LOG_BYTES:
            v.add(
                "queue.max_log_bytes",
                f"must be 0 (the default) or between {MIN_MAX_LOG_BYTES} and {MAX_MAX_LOG_BYTES}",
            )
        changes["max_log_bytes"] = value
    if "max_log_lines" in mask:
        value = merged.max_log_lines
        if not 0 <= value <= MAX_MAX_LOG_LINES:
            v.add(
                "queue.max_log_lines",
                f"must be 0 (the default) or between 1 and {MAX_MAX_LOG_LINES}",
            )
        changes["max_log_lines"] = value
