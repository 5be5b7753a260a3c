UPDATE schedules SET
    next_run_time = %(next_run_time)s,
    last_run_time = COALESCE(%(last_run_time)s, last_run_time),
    run_count = run_count + %(fired)s,
    missed_count = missed_count + %(missed)s,
    buffered_time = %(buffered_time)s,
    event_cursor = GREATEST(event_cursor, %(event_cursor)s),
    update_time = %(now)s
WHERE project = %(project)s AND id = %(id)s
