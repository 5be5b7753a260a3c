-- Writes every writable field; the domain merged the update mask into them.
UPDATE schedules SET
    title = %(title)s,
    description = %(description)s,
    kind = %(kind)s,
    expression = %(expression)s,
    timezone = %(timezone)s,
    task_template = %(task_template)s,
    overlap_policy = %(overlap_policy)s,
    catchup_window_ms = %(catchup_window_ms)s,
    jitter_ms = %(jitter_ms)s,
    dst_policy = %(dst_policy)s,
    next_run_time = %(next_run_time)s,
    state = %(state)s,
    notes = %(notes)s,
    snooze_until = %(snooze_until)s,
    snooze_reason = %(snooze_reason)s,
    update_time = %(now)s
WHERE project = %(project)s AND id = %(id)s
RETURNING *
