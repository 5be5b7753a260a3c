-- Queues of a project with their stats, read now: one keyset page after %(after)s, or
-- just the queue %(only)s. Stats count live tasks by state, and tasks that finished in
-- the last hour.
SELECT
    q.project, q.id, q.paused, q.pause_reason, q.max_concurrency, q.rate_limit,
    q.default_retry_policy, q.execution_timeout_ms, q.finished_task_ttl_ms, q.redact_paths,
    q.max_log_bytes, q.max_log_lines,
    q.create_time, q.update_time,
    s.queued, s.scheduled, s.running, s.awaiting_approval, s.oldest_queued_age,
    s.succeeded_last_hour, s.failed_last_hour
FROM queues q
CROSS JOIN LATERAL (
    SELECT
        count(*) FILTER (WHERE t.state = 'QUEUED') AS queued,
        count(*) FILTER (WHERE t.state = 'SCHEDULED') AS scheduled,
        count(*) FILTER (WHERE t.state = 'RUNNING') AS running,
        count(*) FILTER (WHERE t.state = 'AWAITING_APPROVAL') AS awaiting_approval,
        now() - min(greatest(t.schedule_time, t.create_time)) FILTER (WHERE t.state = 'QUEUED')
            AS oldest_queued_age,
        count(*) FILTER (WHERE t.state = 'SUCCEEDED') AS succeeded_last_hour,
        count(*) FILTER (WHERE t.state = 'FAILED') AS failed_last_hour
    FROM tasks t
    WHERE t.project = q.project AND t.queue = q.id
      AND (
        t.state IN ('QUEUED', 'SCHEDULED', 'RUNNING', 'AWAITING_APPROVAL')
        OR (t.state IN ('SUCCEEDED', 'FAILED') AND t.end_time > now() - interval '1 hour')
      )
) AS s
WHERE q.project = %(project)s
  AND q.id > %(after)s
  AND (%(only)s::text IS NULL OR q.id = %(only)s::text)
ORDER BY q.id
LIMIT %(limit)s
