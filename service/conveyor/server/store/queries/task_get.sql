-- One task, its attempts (JSON, oldest first) and, for a task that waits, why it is
-- not running (the `reason` fragment of task_blocked.sql, put in with psycopg.sql).
SELECT
    t.*,
    (
        SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.attempt), '[]'::jsonb)
        FROM task_attempts a
        WHERE a.project = t.project AND a.task_id = t.id
    ) AS attempts_json,
    {blocked_reason} AS blocked_reason
FROM tasks t
LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue
WHERE t.project = %(project)s AND t.id = %(id)s
