-- RetryTask / BatchRetryTasks: FAILED, CANCELLED or INTERRUPTED tasks (guarded by
-- %(sources)s, the transition table's 'requeue') go back to QUEUED as a new attempt:
-- the outcome of the last run is cleared (its attempt record stays), one more attempt
-- is allowed, and the input is replaced when %(set_input)s. Appends task.queued for
-- each and wakes the workers of their queues. Rows not in a source state are skipped.
WITH requeued AS (
    -- transitions: FAILED -> QUEUED, CANCELLED -> QUEUED, INTERRUPTED -> QUEUED
    UPDATE tasks
    SET state = 'QUEUED', state_reason = %(reason)s,
        input = CASE WHEN %(set_input)s THEN %(input)s::jsonb ELSE input END,
        input_version = input_version + CASE WHEN %(set_input)s THEN 1 ELSE 0 END,
        max_attempts = greatest(max_attempts, attempt + 1),
        schedule_time = now(), result = NULL, error = NULL, summary = '', worker = '',
        lease_id = NULL, lease_expire_time = NULL, cancel_requested = false,
        end_time = NULL, update_time = now()
    WHERE project = %(project)s AND id = ANY (%(ids)s::uuid[])
      AND state = ANY (%(sources)s::text[])
    RETURNING *
),
event AS (
    INSERT INTO events (project, type, subject, task, data)
    SELECT project, 'task.queued', 'projects/' || project || '/tasks/' || id, conveyor_task_change(ROW(requeued.*)::tasks, %(set_input)s),
           jsonb_build_object('reason', state_reason, 'command', %(command)s::text)
    FROM requeued
),
wake AS (
    SELECT pg_notify('conveyor_tasks', q.project || '/' || q.queue)
    FROM (SELECT DISTINCT project, queue FROM requeued) q
)
SELECT r.*, (SELECT count(*) FROM wake) AS woken FROM requeued r
