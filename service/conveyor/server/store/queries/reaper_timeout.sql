-- Ends attempts that ran past their task's execution_timeout_ms (from the attempt's
-- start, by the database clock; `now` is injectable for tests), heartbeats or not.
-- The attempt FAILED with a TaskError of type EXECUTION_TIMEOUT, retryable: with
-- attempts left the task is retried after its backoff, else it ends FAILED; a task whose
-- cancel was requested ends INTERRUPTED. lease_id stays, but the task is no longer
-- RUNNING, so the worker's next heartbeat is answered "lease lost" (as for a cancel) and
-- its late report is refused as stale. SKIP LOCKED: replicas take different rows.
-- Events: task.retrying, task.failed or task.interrupted.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
due AS (
    SELECT t.project, t.id
    FROM tasks t, clock
    WHERE t.state = 'RUNNING' AND t.execution_timeout_ms IS NOT NULL
      AND t.start_time + t.execution_timeout_ms * interval '1 millisecond' <= clock.now
    LIMIT %(limit)s::integer
    FOR UPDATE OF t SKIP LOCKED
),
ended AS (
    -- transitions: RUNNING -> SCHEDULED, RUNNING -> FAILED, RUNNING -> INTERRUPTED
    UPDATE tasks t
    SET state = CASE
            WHEN t.cancel_requested THEN 'INTERRUPTED'
            WHEN t.attempt >= t.max_attempts THEN 'FAILED'
            ELSE 'SCHEDULED'
        END,
        state_reason = CASE
            WHEN t.cancel_requested THEN t.state_reason ELSE 'execution timeout'
        END,
        error = jsonb_build_object(
            'type', 'EXECUTION_TIMEOUT',
            'message', 'the attempt ran longer than its execution_timeout of '
                || (t.execution_timeout_ms / 1000.0)::text || 's',
            'details', jsonb_build_object(
                'reason', 'EXECUTION_TIMEOUT', 'execution_timeout_ms', t.execution_timeout_ms),
            'retryable', true
        ),
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
    FROM due d, clock
    WHERE t.project = d.project AND t.id = d.id AND t.state = 'RUNNING'
    RETURNING t.*
),
attempts_ended AS (
    UPDATE task_attempts a
    SET end_time = clock.now, outcome = 'FAILED', error = e.error
    FROM ended e, clock
    WHERE a.project = e.project AND a.task_id = e.id AND a.attempt = e.attempt
      AND a.outcome IS NULL
),
events_written AS (
    INSERT INTO events (project, type, subject, task, data)
    SELECT e.project,
           CASE e.state WHEN 'SCHEDULED' THEN 'task.retrying' WHEN 'FAILED' THEN 'task.failed'
                ELSE 'task.interrupted' END,
           'projects/' || e.project || '/tasks/' || e.id, conveyor_task_change(ROW(e.*)::tasks),
           jsonb_build_object('reason', 'EXECUTION_TIMEOUT')
    FROM ended e
    ORDER BY e.project, e.id
)
-- One row per project and queue (none when nothing timed out), for the queue metrics.
SELECT project, queue,
       count(*) FILTER (WHERE state = 'SCHEDULED') AS retried,
       count(*) FILTER (WHERE state <> 'SCHEDULED') AS ended
FROM ended
GROUP BY project, queue
