-- Commands whose worker did not acknowledge them before their deadline: TIMED_OUT,
-- with an event each. Safe on N replicas (each row changes once).
WITH expired AS (
    SELECT project, sequence FROM command_states
    WHERE status IN ('ISSUED', 'DISPATCHED') AND deadline <= now()
    ORDER BY deadline
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
changed AS (
    UPDATE command_states s
    SET status = 'TIMED_OUT', finish_time = now(), update_time = now(),
        error = jsonb_build_object('code', 4, 'message',
                                   'the worker did not acknowledge the command in time')
    FROM expired
    WHERE s.project = expired.project AND s.sequence = expired.sequence
    RETURNING s.*
),
event AS (
    INSERT INTO events (project, type, subject, data)
    SELECT project, 'command.timed_out', 'projects/' || project || '/commands/' || sequence,
           jsonb_build_object('worker', worker)
    FROM changed
)
SELECT count(*) FROM changed
