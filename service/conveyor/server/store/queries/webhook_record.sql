-- The outcome of one attempt: the delivery's new state, an attempt row, and an event
-- (webhook.delivered, webhook.retrying or webhook.failed) that ListEvents and WatchEvents
-- show, all in one statement. Only the attempt that holds the claim may report
-- (attempt_count fences a replica whose lease ran out and whose row was claimed again).
WITH current AS (
    SELECT id,
        CASE
            WHEN %(delivered)s THEN 'DELIVERED'
            WHEN attempt_count >= %(max_attempts)s
                OR now() + make_interval(secs => %(retry_delay)s)
                    > create_time + make_interval(secs => %(max_age)s)
                THEN 'FAILED'
            ELSE 'PENDING'
        END AS state
    FROM webhook_deliveries
    WHERE id = %(id)s AND attempt_count = %(attempt)s AND state = 'PENDING'
    FOR UPDATE
),
updated AS (
    UPDATE webhook_deliveries d SET
        state = c.state,
        next_attempt_time = now() + make_interval(secs => %(retry_delay)s),
        body = coalesce(d.body, %(body)s),
        last_status_code = %(status_code)s,
        last_error = %(error)s,
        finish_time = CASE WHEN c.state <> 'PENDING' THEN now() END,
        update_time = now()
    FROM current c
    WHERE d.id = c.id
    RETURNING d.*
),
attempt AS (
    INSERT INTO webhook_attempts (delivery, attempt, start_time, duration_ms, status_code, error)
    SELECT id, attempt_count, %(start_time)s, %(duration_ms)s, %(status_code)s, %(error)s
    FROM updated
),
event AS (
    INSERT INTO events (project, type, subject, task, data)
    SELECT
        project,
        CASE state
            WHEN 'DELIVERED' THEN 'webhook.delivered'
            WHEN 'FAILED' THEN 'webhook.failed'
            ELSE 'webhook.retrying'
        END,
        'projects/' || project || '/tasks/' || task_id,
        task,
        jsonb_strip_nulls(jsonb_build_object(
            'webhook_id', id::text,
            'event', event_type,
            'url', url,
            'attempt', attempt_count,
            'status_code', %(status_code)s::integer,
            'error', nullif(%(error)s::text, ''),
            'duration_ms', %(duration_ms)s::integer,
            'next_attempt_time', CASE WHEN state = 'PENDING' THEN next_attempt_time END
        ))
    FROM updated
)
SELECT state FROM updated
