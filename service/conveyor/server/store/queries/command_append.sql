-- Appends a command to the chain, its first status, the new head, its event, and (for
-- a command addressed to a worker) the wake-up of that worker's Connect stream.
WITH command AS (
    INSERT INTO commands (project, sequence, verb, target, args, issued_by, idempotency_key,
                          create_time, prev_digest, digest, signature)
    VALUES (%(project)s, %(sequence)s, %(verb)s, %(target)s, %(args)s, %(issued_by)s,
            %(idempotency_key)s, %(create_time)s, %(prev_digest)s, %(digest)s, %(signature)s)
    RETURNING *
),
state AS (
    INSERT INTO command_states (project, sequence, status, result, worker, deadline,
                                finish_time, update_time)
    SELECT project, sequence, %(status)s, %(result)s, %(worker)s,
           create_time + make_interval(secs => %(timeout_ms)s::bigint / 1000.0),
           CASE WHEN %(status)s IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT') THEN create_time END,
           create_time
    FROM command
    RETURNING *
),
head AS (
    UPDATE audit_heads SET sequence = %(sequence)s, digest = %(digest)s
    WHERE project = %(project)s
),
event AS (
    INSERT INTO events (project, type, subject, data)
    SELECT project, 'command.' || lower(%(status)s),
           'projects/' || project || '/commands/' || sequence,
           jsonb_build_object('verb', verb, 'target', target, 'issued_by', issued_by)
    FROM command
),
wake AS (
    SELECT pg_notify('conveyor_tasks', project || '/@' || worker) FROM state WHERE worker <> ''
)
SELECT c.*, s.status, s.result, s.error, s.worker, s.deadline, s.dispatch_time, s.finish_time,
       (SELECT count(*) FROM wake) AS woken
FROM command c JOIN state s USING (project, sequence)
