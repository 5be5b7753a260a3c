SELECT id, display_name, callback_url, labels, finished_task_ttl_ms,
       redact_paths, webhook_full_input, create_time, update_time, rate_limits
FROM projects
WHERE id = %(id)s
