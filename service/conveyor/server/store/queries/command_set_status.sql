-- Moves a command from one of %(sources)s to %(status)s (result merged in, error set,
-- dispatch/finish time stamped) and appends its command.<status> event. No row when
-- the command is not in one of the sources (it moved on: an ack after the timeout).
WITH changed AS (
    UPDATE command_states
    SET status = %(status)s,
        result = result || %(result)s::jsonb,
        error = coalesce(%(error)s::jsonb, error),
        dispatch_time = CASE WHEN %(status)s = 'DISPATCHED' THEN now() ELSE dispatch_time END,
        finish_time = CASE WHEN %(status)s IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT') THEN now()
                           ELSE finish_time END,
        update_time = now()
    WHERE project = %(project)s AND sequence = %(sequence)s
      AND status = ANY (%(sources)s::text[])
    RETURNING *
),
event AS (
    INSERT INTO events (project, type, subject, data)
    SELECT project, 'command.' || lower(status), 'projects/' || project || '/commands/' || sequence,
           jsonb_build_object('status', status)
    FROM changed
    WHERE status <> %(quiet)s
)
SELECT count(*) FROM changed
