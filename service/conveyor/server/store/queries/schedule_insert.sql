INSERT INTO schedules (
    project, id, title, description, kind, expression, timezone, task_template,
    created_by, overlap_policy, catchup_window_ms, jitter_ms, dst_policy, next_run_time
) VALUES (
    %(project)s, %(id)s, %(title)s, %(description)s, %(kind)s, %(expression)s, %(timezone)s,
    %(task_template)s, %(created_by)s, %(overlap_policy)s, %(catchup_window_ms)s,
    %(jitter_ms)s, %(dst_policy)s, %(next_run_time)s
)
ON CONFLICT (project, id) DO NOTHING
RETURNING *
