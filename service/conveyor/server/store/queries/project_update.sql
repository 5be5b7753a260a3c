UPDATE projects SET
  display_name = CASE WHEN %(set_display_name)s THEN %(display_name)s ELSE display_name END,
  callback_url = CASE WHEN %(set_callback_url)s THEN %(callback_url)s ELSE callback_url END,
  labels = CASE WHEN %(set_labels)s THEN %(labels)s ELSE labels END,
  finished_task_ttl_ms = CASE
    WHEN %(set_finished_task_ttl)s THEN %(finished_task_ttl_ms)s::bigint
    ELSE finished_task_ttl_ms
  END,
  redact_paths = CASE
    WHEN %(set_redact_paths)s THEN %(redact_paths)s::text[] ELSE redact_paths
  END,
  webhook_full_input = CASE
    WHEN %(set_webhook_full_input)s THEN %(webhook_full_input)s ELSE webhook_full_input
  END,
  rate_limits = CASE WHEN %(set_rate_limits)s THEN %(rate_limits)s ELSE rate_limits END,
  update_time = now()
WHERE id = %(id)s
RETURNING id, display_name, callback_url, labels, finished_task_ttl_ms,
       redact_paths, webhook_full_input, create_time, update_time, rate_limits
