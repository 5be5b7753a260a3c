"""The effect log: every handler run appends one line, from whichever process ran it.

    <task_id> <lease_id> <attempt> <pid> <begin_ns> <end_ns>

The first three fields are the effect; the rest say who and when (CLOCK_MONOTONIC, one
clock for every process of the machine). Each line is one write(2) on an O_APPEND
descriptor and far shorter than PIPE_BUF, so lines from concurrent processes never
interleave, and a process killed mid-handler leaves no half line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Effect", "EffectLog", "read_effects"]


@dataclass(frozen=True)
class Effect:
    task_id: str
    lease_id: str
    attempt: int
    pid: int
    begin_ns: int
    end_ns: int


class EffectLog:
    """The appending end, one per process."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, task_id: str, lease_id: str, attempt: int, begin_ns: int) -> None:
        line = f"{task_id} {lease_id} {attempt} {os.getpid()} {begin_ns} {time.monotonic_ns()}\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        os.close(self._fd)


def read_effects(path: Path) -> list[Effect]:
    """Every effect in the log (none when no handler ran yet)."""
    if not path.exists():
        return []
    effects = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) != 6:
            raise ValueError(f"torn effect line: {line!r}")
        task_id, lease_id, attempt, pid, begin, end = fields
        effects.append(Effect(task_id, lease_id, int(attempt), int(pid), int(begin), int(end)))
    return effects
