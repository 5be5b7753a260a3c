-- One task, its attempts (JSON, oldest first) and, for a task that waits, why it is
-- not running: the first reason that holds, NULL when none does.
SELECT
    t.*,
    (
        SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.attempt), '[]'::jsonb)
        FROM task_attempts a
        WHERE a.project = t.project AND a.task_id = t.id
    ) AS attempts_json,
    CASE
        WHEN t.state = 'AWAITING_APPROVAL' THEN 'AWAITING_APPROVAL'
        WHEN t.state NOT IN ('SCHEDULED', 'QUEUED') THEN NULL
        WHEN t.schedule_time > now() THEN 'SCHEDULED_IN_FUTURE'
        WHEN q.paused THEN 'QUEUE_PAUSED'
        WHEN q.max_concurrency > 0 AND (
            SELECT count(*)
            FROM (
                SELECT 1 FROM tasks r
                WHERE r.project = t.project AND r.queue = t.queue AND r.state = 'RUNNING'
                LIMIT q.max_concurrency
            ) AS running
        ) >= q.max_concurrency THEN 'CONCURRENCY_LIMITED'
        WHEN NOT EXISTS (
            SELECT 1 FROM workers w
            WHERE w.project = t.project AND w.connected AND t.queue = ANY (w.queues)
              AND w.last_seen_time > now() - %(worker_seen_within)s::interval
        ) THEN 'NO_WORKER'
    END AS blocked_reason
FROM tasks t
LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue
WHERE t.project = %(project)s AND t.id = %(id)s
