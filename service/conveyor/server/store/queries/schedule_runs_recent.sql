-- The last runs of a schedule with the state of the task each created.
SELECT r.nominal_time, r.fire_time, r.task_id, r.note, t.state AS task_state
FROM schedule_runs r
LEFT JOIN tasks t ON t.project = r.project AND t.id = r.task_id
WHERE r.project = %(project)s AND r.schedule_id = %(schedule_id)s
ORDER BY r.fire_time DESC, r.nominal_time DESC
LIMIT %(limit)s
