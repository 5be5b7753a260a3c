INSERT INTO projects (id, display_name, callback_url, labels, webhook_secret)
VALUES (%(id)s, %(display_name)s, %(callback_url)s, %(labels)s, %(webhook_secret)s)
ON CONFLICT (id) DO NOTHING
RETURNING id, display_name, callback_url, labels, finished_task_ttl_ms,
       redact_paths, webhook_full_input, create_time, update_time, rate_limits
