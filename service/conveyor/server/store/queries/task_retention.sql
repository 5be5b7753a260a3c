-- The finished-task retention loop (loops/task_retention.py).

-- name: lock
-- One replica prunes at a time: a transaction-level lock taken without waiting, held
-- only for one batch, so replicas take turns and none waits.
SELECT pg_try_advisory_xact_lock(hashtextextended('conveyor.task_retention', 0)) AS locked

-- name: prune
-- One batch of finished tasks past their queue's finished_task_ttl_ms (NULL: their
-- project's, and if that is NULL too the default %(default_ms)s; 0: kept forever), oldest first, with their events; their
-- attempts (and dedupe keys) cascade. A task whose tree (same root_task) still has an
-- unfinished task is kept until that finishes. SKIP LOCKED: a task being changed
-- right now is left for the next pass instead of waited for.
WITH horizon AS (
    -- The shortest ttl in use bounds the index scan (tasks_finished_idx): no task
    -- that ended after it can be due.
    SELECT least(
        %(default_ms)s::bigint,
        (SELECT min(finished_task_ttl_ms) FROM queues WHERE finished_task_ttl_ms > 0),
        (SELECT min(finished_task_ttl_ms) FROM projects WHERE finished_task_ttl_ms > 0)
    ) AS ms
),
doomed AS (
    SELECT t.project, t.id, t.create_time, t.end_time
    FROM tasks t
    JOIN projects p ON p.id = t.project
    LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue
    WHERE t.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
      AND t.end_time <= %(now)s::timestamptz
          - (SELECT ms FROM horizon) * interval '1 millisecond'
      AND coalesce(q.finished_task_ttl_ms, p.finished_task_ttl_ms, %(default_ms)s::bigint) > 0
      AND t.end_time <= %(now)s::timestamptz
          - coalesce(q.finished_task_ttl_ms, p.finished_task_ttl_ms, %(default_ms)s::bigint) * interval '1 millisecond'
      AND NOT EXISTS (
          SELECT 1 FROM tasks live
          WHERE live.project = t.project AND live.root_task = t.root_task
            AND live.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
      )
      -- Nor a task that a live task depends on (Task.depends_on) until that one ends;
      -- has_dependents first, so other tasks cost no probe of task_dependencies.
      AND NOT (t.has_dependents AND EXISTS (
          SELECT 1 FROM task_dependencies e
          JOIN tasks live ON live.project = e.project AND live.id = e.task_id
          WHERE e.project = t.project AND e.depends_on = t.id
            AND live.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
      ))
    ORDER BY t.end_time
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
),
events_gone AS (
    -- A task's events are written while it lives, so the time range (with slack for
    -- clock steps) keeps this on events_time_idx instead of scanning the log.
    DELETE FROM events e
    USING doomed d
    WHERE e.project = d.project
      AND e.time BETWEEN d.create_time - interval '1 hour' AND d.end_time + interval '1 hour'
      AND e.subject = 'projects/' || d.project || '/tasks/' || d.id
    RETURNING 1
),
gone AS (
    DELETE FROM tasks t
    USING doomed d
    WHERE t.project = d.project AND t.id = d.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS tasks, (SELECT count(*) FROM events_gone) AS events
