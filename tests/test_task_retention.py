"""Queue.finished_task_ttl: the task retention loop deletes finished tasks past it (with
their attempts and events), driven here by an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from prometheus_client import REGISTRY

from conveyor.client import AsyncClient, InvalidArgumentError, NotFoundError
from conveyor.server.app import ConveyorServer
from conveyor.server.loops.task_retention import TaskRetentionLoop
from conveyor.v1 import project_pb2, task_pb2


async def _finish(c: AsyncClient, queue: str) -> task_pb2.Task:
    """Leases the one ready task of `queue` and completes it."""
    (lease,) = await c.lease_tasks([queue], worker="w-1", wait_timeout=5)
    return await c.complete_task(lease.task.name, lease.lease_id, {"ok": True})


async def _rows(server: ConveyorServer, name: str) -> tuple[int, int, int]:
    """The task's rows, attempt rows and event rows still stored."""
    project, task_id = name.split("/")[1::2]
    async with server.context.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM tasks WHERE project = %(p)s AND id = %(id)s::uuid),"
            " (SELECT count(*) FROM task_attempts WHERE project = %(p)s"
            "   AND task_id = %(id)s::uuid),"
            " (SELECT count(*) FROM events WHERE project = %(p)s AND subject = %(name)s)",
            {"p": project, "id": task_id, "name": name},
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _deleted_metric() -> float:
    return REGISTRY.get_sample_value("conveyor_finished_tasks_deleted_total") or 0.0


async def test_finished_tasks_past_their_ttl_are_deleted_with_attempts_and_events(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        kept = await c.update_queue("keep", finished_task_ttl=0)
        assert kept.HasField("finished_task_ttl") and kept.finished_task_ttl.ToSeconds() == 0
        assert (await c.get_queue("keep")).HasField("finished_task_ttl")
        short = await c.update_queue("short", finished_task_ttl=timedelta(hours=1))
        assert short.finished_task_ttl.ToTimedelta() == timedelta(hours=1)
        with pytest.raises(InvalidArgumentError) as caught:
            await c.update_queue("short", finished_task_ttl=-1)
        assert "queue.finished_task_ttl" in str(caught.value)

        await c.create_task("k", queue="plain")
        assert not (await c.get_queue("plain")).HasField("finished_task_ttl")
        old = await _finish(c, "plain")
        await c.create_task("k", queue="short")
        brief = await _finish(c, "short")
        await c.create_task("k", queue="keep")
        forever = await _finish(c, "keep")
        parent = await c.create_task("p", queue="tree")
        child = await c.create_task("c", queue="tree-kids", parent_task=parent.name)
        assert (await _finish(c, "tree")).name == parent.name
        stored = await _rows(server, old.name)
        assert stored[:2] == (1, 1) and stored[2] > 0

        loop = TaskRetentionLoop(server.context.pool, batch=1)
        now = datetime.now(UTC)
        before = _deleted_metric()
        # Within every ttl: nothing goes.
        assert await loop.run_once(now + timedelta(minutes=30)) == 0
        # Past the short queue's hour, within the 30-day default.
        assert await loop.run_once(now + timedelta(hours=2)) == 1
        assert await _rows(server, brief.name) == (0, 0, 0)
        assert (await _rows(server, old.name))[0] == 1
        # Past the default: the old task goes with its attempts and events; the parent
        # stays while its child is unfinished, and the keep-forever queue's task stays.
        assert await loop.run_once(now + timedelta(days=31)) == 1
        assert await _rows(server, old.name) == (0, 0, 0)
        with pytest.raises(NotFoundError):
            await c.get_task(old.name)
        assert (await c.get_task(parent.name)).name == parent.name
        assert (await c.get_task(forever.name)).name == forever.name
        assert await loop.run_once(now + timedelta(days=3650)) == 0
        # Once the child finishes, the whole tree goes.
        await c.cancel_task(child.name)
        assert await loop.run_once(now + timedelta(days=31)) == 2
        assert await _rows(server, parent.name) == (0, 0, 0)
        assert await _rows(server, child.name) == (0, 0, 0)
        assert (await c.get_task(forever.name)).name == forever.name
        assert _deleted_metric() - before == 4


async def test_one_replica_prunes_at_a_time(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        for _ in range(5):
            await c.create_task("k", queue="many")
        for _ in range(5):
            await _finish(c, "many")
    loops = [TaskRetentionLoop(server.context.pool, batch=2) for _ in range(3)]
    future = datetime.now(UTC) + timedelta(days=31)
    counts = await asyncio.gather(*(loop.run_once(future) for loop in loops))
    # Each batch runs under the try-lock, so replicas never delete the same task twice,
    # and whatever one skipped is picked up by the next pass.
    total = sum(counts) + await loops[0].run_once(future)
    assert total == 5


async def _set_project_ttl(
    c: AsyncClient, ttl: duration_pb2.Duration | None
) -> project_pb2.Project:
    return await c.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name="projects/alpha", finished_task_ttl=ttl),
            update_mask=field_mask_pb2.FieldMask(paths=["finished_task_ttl"]),
        )
    )


async def test_the_project_default_applies_to_queues_that_set_none(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    loop = TaskRetentionLoop(server.context.pool)
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        with pytest.raises(InvalidArgumentError) as caught:
            await _set_project_ttl(c, duration_pb2.Duration(nanos=1000))
        assert "project.finished_task_ttl" in str(caught.value)
        forever = await _set_project_ttl(c, duration_pb2.Duration())
        assert forever.HasField("finished_task_ttl")
        await c.create_task("k", queue="by-project")
        kept = await _finish(c, "by-project")
        await loop.run_once(datetime.now(UTC) + timedelta(days=3650))
        assert (await _rows(server, kept.name))[0] == 1

        two_hours = await _set_project_ttl(c, duration_pb2.Duration(seconds=7200))
        assert (await c.get_project("alpha")).finished_task_ttl.seconds == 7200
        assert two_hours.finished_task_ttl.seconds == 7200
        await c.create_task("k", queue="by-project")
        done = await _finish(c, "by-project")
        now = datetime.now(UTC)
        await loop.run_once(now + timedelta(hours=1))
        assert (await _rows(server, done.name))[0] == 1
        await loop.run_once(now + timedelta(hours=3))
        assert await _rows(server, done.name) == (0, 0, 0)
        # Unset again: back to the server default.
        assert not (await _set_project_ttl(c, None)).HasField("finished_task_ttl")
