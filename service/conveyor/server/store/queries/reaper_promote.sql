-- Makes SCHEDULED tasks whose time has come QUEUED (event task.queued) and wakes the
-- workers of their queues (NOTIFY is delivered at commit, once per distinct payload).
-- `now` is injectable for tests. SKIP LOCKED lets replicas promote at once.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
due AS (
    SELECT t.project, t.id
    FROM tasks t, clock
    -- deps_remaining = 0: a task waiting for dependencies is released by the last of
    -- them to end (0023), never by time; tasks_due_idx holds only these.
    WHERE t.state = 'SCHEDULED' AND t.deps_remaining = 0 AND t.schedule_time <= clock.now
    ORDER BY t.schedule_time
    LIMIT %(limit)s::integer
    FOR UPDATE OF t SKIP LOCKED
),
promoted AS (
    -- transitions: SCHEDULED -> QUEUED
    UPDATE tasks t
    SET state = 'QUEUED', update_time = clock.now
    FROM due d, clock
    WHERE t.project = d.project AND t.id = d.id AND t.state = 'SCHEDULED'
    RETURNING t.*
),
events_written AS (
    INSERT INTO events (project, type, subject, task)
    SELECT p.project, 'task.queued', 'projects/' || p.project || '/tasks/' || p.id, conveyor_task_change(ROW(p.*)::tasks)
    FROM promoted p
),
woken AS (
    SELECT pg_notify('conveyor_tasks', k.key) AS notified
    FROM (SELECT DISTINCT project || '/' || queue AS key FROM promoted) AS k
)
SELECT (SELECT count(*) FROM promoted) AS promoted, (SELECT count(*) FROM woken) AS woken
