-- Asks the worker of a RUNNING task to stop: it learns cancel_requested on its next
-- heartbeat, and the task ends INTERRUPTED when it reports or its lease expires. The
-- state does not change, so no event. No row when the task is not RUNNING any more.
UPDATE tasks
SET cancel_requested = true,
    state_reason = CASE WHEN cancel_requested THEN state_reason ELSE %(reason)s END,
    update_time = now()
WHERE project = %(project)s AND id = %(id)s AND state = 'RUNNING'
RETURNING *
