-- Sets the queue settings whose set_* flag is true (creating the queue if no task used
-- it yet) and wakes its workers: a higher max_concurrency may let tasks run.
WITH updated AS (
    INSERT INTO queues AS q (
        project, id, max_concurrency, rate_limit, default_retry_policy, execution_timeout_ms,
        finished_task_ttl_ms, redact_paths, max_log_bytes, max_log_lines
    )
    VALUES (
        %(project)s, %(id)s, %(max_concurrency)s, %(rate_limit)s, %(default_retry_policy)s::jsonb,
        %(execution_timeout_ms)s::bigint, %(finished_task_ttl_ms)s::bigint,
        %(redact_paths)s::text[], %(max_log_bytes)s::bigint, %(max_log_lines)s::integer
    )
    ON CONFLICT (project, id) DO UPDATE
    SET max_concurrency = CASE
            WHEN %(set_max_concurrency)s THEN excluded.max_concurrency ELSE q.max_concurrency
        END,
        rate_limit = CASE WHEN %(set_rate_limit)s THEN excluded.rate_limit ELSE q.rate_limit END,
        default_retry_policy = CASE
            WHEN %(set_default_retry_policy)s THEN excluded.default_retry_policy
            ELSE q.default_retry_policy
        END,
        execution_timeout_ms = CASE
            WHEN %(set_execution_timeout)s THEN %(execution_timeout_ms)s::bigint
            ELSE q.execution_timeout_ms
        END,
        finished_task_ttl_ms = CASE
            WHEN %(set_finished_task_ttl)s THEN %(finished_task_ttl_ms)s::bigint
            ELSE q.finished_task_ttl_ms
        END,
        redact_paths = CASE
            WHEN %(set_redact_paths)s THEN excluded.redact_paths ELSE q.redact_paths
        END,
        -- NULL: the server default (UpdateQueue's 0).
        max_log_bytes = CASE
            WHEN %(set_max_log_bytes)s THEN %(max_log_bytes)s::bigint ELSE q.max_log_bytes
        END,
        max_log_lines = CASE
            WHEN %(set_max_log_lines)s THEN %(max_log_lines)s::integer ELSE q.max_log_lines
        END,
        update_time = now()
    RETURNING q.project, q.id
)
SELECT count(pg_notify('conveyor_tasks', project || '/' || id)) AS woken FROM updated
