"""The checker: reads the effect log and the database, and counts what went wrong.

- lost: an accepted task (its create was acknowledged) that is not in the database, is
  not terminal when the drill ends, or SUCCEEDED with a result no effect stands behind.
- duplicated: two effects under one lease; or two leases of one task running at once as
  the database recorded them (an attempt that started before the previous one ended, or
  two SUCCEEDED attempts).
- unexpected: an effect for a task that was never created, or under a lease the
  database never issued for that task.
- re-runs: tasks with effects under more than one lease (allowed: a lease that expired is
  fenced and its task runs again; reported).

`wait_terminal` is how a drill lets the queue drain before it checks.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from drillkit.effects import Effect

__all__ = ["TERMINAL", "Verdict", "check", "count_not_terminal", "wait_terminal"]

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED")

_TASKS = "SELECT id::text, state, result FROM tasks WHERE project = %s"
_ATTEMPTS = """
SELECT task_id::text, attempt, lease_id::text, start_time, end_time, outcome
FROM task_attempts WHERE project = %s ORDER BY task_id, attempt
"""
_NOT_TERMINAL = """
SELECT count(*) FROM tasks
WHERE project = %s AND id = ANY(%s::uuid[]) AND state NOT IN
    ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
"""


@dataclass
class Verdict:
    accepted: int = 0
    succeeded: int = 0
    failed: int = 0
    effects: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reruns: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def figure(self) -> str:
        """The pass figure, one line."""
        return (
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"unexpected {len(self.unexpected)}, re-runs {self.reruns} "
            f"(accepted {self.accepted}, succeeded {self.succeeded}, failed {self.failed}, "
            f"effects {self.effects})"
        )

    def explain(self, limit: int = 10) -> str:
        parts = [self.figure()]
        for label, items in (
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("unexpected", self.unexpected),
        ):
            if items:
                parts.append(f"{label}: " + "; ".join(items[:limit]))
        return "\n".join(parts)


def _ids(ids: Iterable[str]) -> list[str]:
    return [str(uuid.UUID(task_id)) for task_id in ids]


def count_not_terminal(database_url: str, project: str, accepted: Iterable[str]) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(_NOT_TERMINAL, (project, _ids(accepted))).fetchone()
    assert row is not None
    return int(row[0])


def wait_terminal(
    database_url: str, project: str, accepted: Iterable[str], *, timeout: float
) -> int:
    """Waits until every accepted task is terminal (or `timeout`); returns how many are not."""
    ids = _ids(accepted)
    deadline = time.monotonic() + timeout
    while True:
        left = count_not_terminal(database_url, project, ids)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def check(
    database_url: str, project: str, accepted: Iterable[str], effects: list[Effect]
) -> Verdict:
    """Counts lost, duplicated, unexpected and re-run work (see the module doc)."""
    accepted_ids = set(_ids(accepted))
    with psycopg.connect(database_url) as conn:
        tasks: dict[str, tuple[str, Any]] = {
            row[0]: (row[1], row[2]) for row in conn.execute(_TASKS, (project,))
        }
        attempts: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in conn.execute(_ATTEMPTS, (project,)):
            attempts[row[0]].append(row)

    verdict = Verdict(accepted=len(accepted_ids), effects=len(effects))
    by_task: dict[str, list[Effect]] = defaultdict(list)
    for effect in effects:
        by_task[effect.task_id].append(effect)
    leases_of = {task_id: {row[2] for row in rows} for task_id, rows in attempts.items()}

    for task_id in sorted(accepted_ids):
        if task_id not in tasks:
            verdict.lost.append(f"{task_id} accepted but not in the database")
            continue
        state, result = tasks[task_id]
        if state not in TERMINAL:
            verdict.lost.append(f"{task_id} still {state}")
        elif state == "SUCCEEDED":
            verdict.succeeded += 1
            stood = result.get("lease_id") if isinstance(result, dict) else None
            if not any(effect.lease_id == stood for effect in by_task.get(task_id, [])):
                verdict.lost.append(f"{task_id} SUCCEEDED with no effect under lease {stood}")
        else:
            verdict.failed += 1

    for lease_id, count in Counter(effect.lease_id for effect in effects).items():
        if count > 1:
            verdict.duplicated.append(f"{count} effects under lease {lease_id}")
    for task_id, rows in attempts.items():
        if sum(1 for row in rows if row[5] == "SUCCEEDED") > 1:
            verdict.duplicated.append(f"{task_id} SUCCEEDED under two leases")
        for before, after in itertools.pairwise(rows):
            if before[4] is None or before[4] > after[3]:
                verdict.duplicated.append(
                    f"{task_id} attempt {after[1]} started before attempt {before[1]} ended"
                )

    for task_id, task_effects in by_task.items():
        if task_id not in tasks:
            verdict.unexpected.append(f"effect for {task_id}, never created")
            continue
        for effect in task_effects:
            if effect.lease_id not in leases_of.get(task_id, set()):
                verdict.unexpected.append(f"{task_id}: lease {effect.lease_id} never issued")
        if len({effect.lease_id for effect in task_effects}) > 1:
            verdict.reruns += 1
    return verdict
