"""Issue 17's scale figure: the drain and enqueue-to-start on a full table vs an empty one.

`bench_queue.py --scale` measures the SDK Worker drain (concurrency 100) and the
enqueue-to-handler-start latency first on the bench's empty project, then fills the
same project with 1,000,000 finished tasks and 100,000 queued tasks in other queues, and
measures both again on fresh queues. Target: each within 1.25x of its empty-table figure.

The finished tasks are written by SQL (one INSERT ... SELECT per 100,000, each with its
attempt row and its task.succeeded event), since draining a million tasks through the
service would take longer than the rest of the bench; they are shaped as the service
leaves them (SUCCEEDED, one attempt, a result, times a day old, ids UUIDv7 of that time,
spread over ten queues). The 100,000 queued tasks go through BatchCreateTasks, the real
path. Then VACUUM (ANALYZE) of the three tables stands for what autovacuum does within
a minute of such an insert.
"""

from __future__ import annotations

import time
from typing import Any

FINISHED = 1_000_000
QUEUED_ELSEWHERE = 100_000
CHUNK = 100_000

_FINISHED_SQL = """
WITH made AS (
    SELECT n, uuidv7(-interval '1 day') AS id, now() - interval '1 day' AS t
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
),
task AS (
    INSERT INTO tasks (
        project, id, queue, kind, input, state, attempt, root_task, result, worker,
        schedule_time, create_time, start_time, end_time, update_time, creator
    )
    SELECT %(project)s, id, 'scale-done-' || (n %% 10), 'bench.noop',
        jsonb_build_object('i', n), 'SUCCEEDED', 1, id, '{"ok": true}', 'scale-filler',
        t, t, t, t, t, 'scale-filler'
    FROM made
    RETURNING project, id, end_time
),
attempt AS (
    INSERT INTO task_attempts (project, task_id, attempt, worker, lease_id, start_time,
        end_time, outcome)
    SELECT project, id, 1, 'scale-filler', gen_random_uuid(), end_time, end_time, 'SUCCEEDED'
    FROM task
)
INSERT INTO events (project, type, time, subject, task)
SELECT project, 'task.succeeded', end_time, 'projects/' || project || '/tasks/' || id,
    jsonb_build_object('state', 'SUCCEEDED', 'attempt', 1, 'result', '{"ok": true}'::jsonb)
FROM task
"""


def fill_finished(url: str, project: str, count: int = FINISHED) -> float:
    """Writes `count` finished tasks into `project`; returns the seconds it took."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, count, CHUNK):
            last = min(first + CHUNK, count) - 1
            conn.execute(_FINISHED_SQL, {"project": project, "first": first, "last": last})
    return time.monotonic() - started


async def fill_queued(client: Any, count: int = QUEUED_ELSEWHERE) -> None:
    """`count` queued tasks in ten queues no bench worker leases from."""
    for start in range(0, count, 1000):
        await client.batch_create_tasks(
            [
                {"kind": "bench.noop", "queue": f"scale-waiting-{i % 10}", "input": {"i": i}}
                for i in range(start, min(start + 1000, count))
            ]
        )


def settle(url: str) -> None:
    """What autovacuum would do shortly after the fill: visibility map and statistics."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) tasks, task_attempts, events")


def table_rows(url: str, project: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT count(*) FILTER (WHERE state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')),"
            " count(*) FILTER (WHERE state = 'QUEUED') FROM tasks WHERE project = %s",
            (project,),
        ).fetchone()
    assert counts is not None
    return {"finished": int(counts[0]), "queued": int(counts[1])}


def report(results: dict[str, Any], pct: Any) -> bool:
    """Prints the scale target's lines; True when both held (or nothing was measured)."""
    scale = results.get("scale")
    label = "scale (1M finished, 100k queued elsewhere)"
    if not scale:
        print(f"  {label:52s}   not measured (--scale)")
        return True
    print(
        f"  {label}: the project then held {scale['rows']['finished']:,} finished and"
        f" {scale['rows']['queued']:,} queued tasks (filled in {scale['fill_seconds']:.0f} s)"
    )
    ok = True
    empty_drain = results["svc_sdk_100"]["rate"]
    full_drain = results["svc_sdk_100_scale"]["rate"]
    slower = empty_drain / full_drain if full_drain else float("inf")
    passed = slower <= 1.25
    ok &= passed
    print(
        f"  {'  SDK Worker c100 drain, empty / full table':52s} {slower:6.2f}x"
        f" (<= 1.25x) {'PASS' if passed else 'MISS'}"
        f"  [{empty_drain:.0f} / {full_drain:.0f} tasks/s]"
    )
    empty_p50 = pct(results["svc_latency"], 0.5)
    full_p50 = pct(results["svc_latency_scale"], 0.5)
    slower = full_p50 / empty_p50 if empty_p50 else float("inf")
    passed = slower <= 1.25
    ok &= passed
    print(
        f"  {'  enqueue->start p50, full / empty table':52s} {slower:6.2f}x"
        f" (<= 1.25x) {'PASS' if passed else 'MISS'}"
        f"  [{empty_p50 * 1e3:.2f} / {full_p50 * 1e3:.2f} ms]"
    )
    return ok
