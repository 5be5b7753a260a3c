-- Heartbeats: extends leases still held (fenced by lease_id like every report) and keeps
-- the progress a handler reported on its attempt. A lease_ms of NULL means the task's
-- lease_duration. A heartbeat also says its worker is alive (a unary caller may go
-- long without LeaseTasks), written at most every few seconds. Reported progress is
-- also kept on the task (Task.progress) and appended as a `task.progress` event, at most
-- one per task per second (progress_event_time): the task always holds the latest, the
-- log only samples it. Returns one row per lease extended.
WITH beats AS (
    SELECT *
    FROM unnest(
        %(ids)s::uuid[], %(lease_ids)s::uuid[], %(lease_ms)s::bigint[], %(progress)s::jsonb[]
    ) AS b (id, lease_id, lease_ms, progress)
),
extended AS (
    UPDATE tasks t
    SET lease_expire_time =
        now() + coalesce(b.lease_ms, t.lease_duration_ms) * interval '1 millisecond',
        progress = coalesce(b.progress, t.progress),
        progress_time = CASE WHEN b.progress IS NULL THEN t.progress_time ELSE now() END,
        progress_event_time = CASE
            WHEN b.progress IS NOT NULL AND (t.progress_event_time IS NULL
                 OR t.progress_event_time <= now() - interval '1 second') THEN now()
            ELSE t.progress_event_time
        END
    FROM beats b
    WHERE t.project = %(project)s AND t.id = b.id
      AND t.lease_id = b.lease_id AND t.state = 'RUNNING'
    RETURNING t.project, t.id, t.worker, t.lease_id, t.attempt, t.lease_expire_time,
              t.cancel_requested,
              -- now() is the statement's clock: equal only when this update set it.
              b.progress IS NOT NULL AND t.progress_event_time = now() AS evented,
              t AS row
),
progress_event AS (
    INSERT INTO events (project, type, subject, task, data)
    SELECT e.project, 'task.progress', 'projects/' || e.project || '/tasks/' || e.id,
           conveyor_task_change(e.row) || jsonb_build_object(
               'progress', (e.row).progress, 'progress_time', (e.row).progress_time),
           jsonb_build_object('progress', (e.row).progress)
    FROM extended e
    WHERE e.evented
),
seen AS (
    UPDATE workers w
    SET last_seen_time = now()
    FROM (SELECT DISTINCT project, worker FROM extended) AS e
    WHERE w.project = e.project AND w.id = e.worker AND w.connected
      AND w.last_seen_time < now() - interval '5 seconds'
),
progressed AS (
    UPDATE task_attempts a
    SET progress = b.progress
    FROM extended e
    JOIN beats b ON b.id = e.id
    WHERE b.progress IS NOT NULL
      AND a.project = e.project AND a.task_id = e.id AND a.attempt = e.attempt
)
SELECT id, lease_id, lease_expire_time, cancel_requested FROM extended
