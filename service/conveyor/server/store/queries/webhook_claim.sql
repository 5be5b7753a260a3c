-- Due deliveries for this replica to attempt. SKIP LOCKED hands each row to one replica;
-- the claim commits at once and pushes next_attempt_time out by the lease, so no
-- transaction stays open during the HTTP request (an open writer would hold back every
-- event cursor), and a replica that dies mid-attempt leaves the row to whoever finds it
-- due when the lease ends. attempt_count numbers this attempt and fences its report.
WITH due AS (
    SELECT id
    FROM webhook_deliveries
    WHERE state = 'PENDING' AND next_attempt_time <= now()
    ORDER BY next_attempt_time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET
    attempt_count = d.attempt_count + 1,
    next_attempt_time = now() + make_interval(secs => %(lease)s),
    update_time = now()
FROM due, projects p
WHERE d.id = due.id AND p.id = d.project
RETURNING
    d.id, d.project, d.task_id, d.event_type, d.url, d.task::text AS task, d.event_time,
    d.attempt_count, d.body, d.create_time,
    p.webhook_secret,
    CASE WHEN p.previous_secret_expire_time > now() THEN p.previous_webhook_secret END
        AS previous_secret
