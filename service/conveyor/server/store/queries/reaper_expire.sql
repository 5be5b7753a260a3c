-- Reclaims leases that expired by the database clock (`now` is injectable for tests).
-- SKIP LOCKED: replicas reaping at once each take different rows, so every expired lease
-- is reclaimed exactly once. The attempt counts (it was counted at lease): with attempts
-- left the task is retried after its backoff, else (or when a cancel was requested) it
-- ends INTERRUPTED. Events: task.lost, then task.retrying or task.interrupted.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
expired AS (
    SELECT t.project, t.id
    FROM tasks t, clock
    WHERE t.state = 'RUNNING' AND t.lease_expire_time < clock.now
    ORDER BY t.lease_expire_time
    LIMIT %(limit)s::integer
    FOR UPDATE OF t SKIP LOCKED
),
reaped AS (
    -- transitions: RUNNING -> SCHEDULED, RUNNING -> INTERRUPTED
    UPDATE tasks t
    SET state = CASE
            WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN 'INTERRUPTED'
            ELSE 'SCHEDULED'
        END,
        -- A requested cancel keeps its reason (CancelTask wrote it).
        state_reason = CASE WHEN t.cancel_requested THEN t.state_reason ELSE 'lease expired' END,
        schedule_time = CASE
            WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN t.schedule_time
            ELSE clock.now + conveyor_backoff_ms(
                t.backoff, t.attempt, t.initial_backoff_ms, t.max_backoff_ms,
                coalesce(%(rand)s::double precision, random())
            ) * interval '1 millisecond'
        END,
        end_time = CASE
            WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN clock.now
        END,
        lease_expire_time = NULL,
        update_time = clock.now
    FROM expired e, clock
    WHERE t.project = e.project AND t.id = e.id AND t.state = 'RUNNING'
    RETURNING t.*
),
attempts_lost AS (
    UPDATE task_attempts a
    SET end_time = clock.now, outcome = 'LEASE_EXPIRED'
    FROM reaped r, clock
    WHERE a.project = r.project AND a.task_id = r.id AND a.attempt = r.attempt
      AND a.outcome IS NULL
),
events_written AS (
    INSERT INTO events (project, type, subject, task)
    SELECT r.project, e.type, 'projects/' || r.project || '/tasks/' || r.id, conveyor_task_change(ROW(r.*)::tasks)
    FROM reaped r
    CROSS JOIN LATERAL (
        VALUES (1, 'task.lost'),
               (2, CASE r.state WHEN 'SCHEDULED' THEN 'task.retrying' ELSE 'task.interrupted' END)
    ) AS e (ord, type)
    ORDER BY r.project, r.id, e.ord
)
-- One row per project and queue (none when nothing expired), for the queue metrics.
SELECT project, queue,
       count(*) FILTER (WHERE state = 'SCHEDULED') AS retried,
       count(*) FILTER (WHERE state = 'INTERRUPTED') AS interrupted
FROM reaped
GROUP BY project, queue
