-- Cancels a task that has not started (guarded by %(sources)s, the states the
-- transition table allows) and appends its event in the same statement. No row when
-- the guard missed: the task does not exist or has moved on.
WITH cancelled AS (
    -- transitions: SCHEDULED -> CANCELLED, QUEUED -> CANCELLED, AWAITING_APPROVAL -> CANCELLED
    UPDATE tasks
    SET state = 'CANCELLED', state_reason = %(reason)s, end_time = now(), update_time = now()
    WHERE project = %(project)s AND id = %(id)s AND state = ANY (%(sources)s::text[])
    RETURNING *
),
event AS (
    INSERT INTO events (project, type, subject, task, data)
    SELECT project, %(event_type)s, 'projects/' || project || '/tasks/' || id, conveyor_task_change(ROW(cancelled.*)::tasks),
           jsonb_build_object('reason', state_reason)
    FROM cancelled
)
SELECT * FROM cancelled
