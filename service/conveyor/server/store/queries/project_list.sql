-- One keyset page of projects; %(only)s restricts it to one project (project keys).
SELECT id, display_name, callback_url, labels, finished_task_ttl_ms,
       redact_paths, webhook_full_input, create_time, update_time, rate_limits
FROM projects
WHERE id > %(after)s AND (%(only)s::text IS NULL OR id = %(only)s::text)
ORDER BY id
LIMIT %(limit)s
