"""The checker finds what it counts: a drill with faults planted in the log and the queue."""

from __future__ import annotations

import uuid

import pytest
from drillkit.drill import Drill, Figure
from drillkit.effects import EffectLog, read_effects

pytestmark = pytest.mark.drill


def test_checker_counts_planted_faults(drill: Drill, figure: Figure) -> None:
    replica = drill.replica("a")
    with drill.client(replica) as client:
        done = drill.create_tasks(client, 3)
        drill.worker(replica, concurrency=2)
        assert drill.wait_terminal(done, timeout=60) == 0
        clean = drill.check(done)
        assert clean.ok, clean.explain()
        assert (clean.succeeded, clean.reruns, clean.effects) == (3, 0, 3)
        # Planted: a queue nobody serves (its task never ends), a second effect under a
        # lease that already has one, and effects for a task and a lease never issued.
        stuck = drill.create_tasks(client, 1, queue="nobody")
    first = read_effects(drill.effects_path)[0]
    log = EffectLog(drill.effects_path)
    log.append(first.task_id, first.lease_id, first.attempt, 0)
    log.append(str(uuid.uuid4()), str(uuid.uuid4()), 1, 0)
    log.append(done[1], str(uuid.uuid4()), 2, 0)
    log.close()
    verdict = drill.check(done + stuck)
    figure(f"planted 1 lost, 1 duplicated, 2 unexpected: {verdict.figure()}")
    assert len(verdict.lost) == 1 and stuck[0] in verdict.lost[0]
    assert len(verdict.duplicated) == 1 and first.lease_id in verdict.duplicated[0]
    assert len(verdict.unexpected) == 2
    assert verdict.reruns == 1
