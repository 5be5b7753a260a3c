-- When the next SCHEDULED task falls due (NULL when none is scheduled); tasks waiting
-- for dependencies are not due at any time (tasks_due_idx leaves them out).
SELECT min(schedule_time) AS next_due, now() AS now FROM tasks
WHERE state = 'SCHEDULED' AND deps_remaining = 0
