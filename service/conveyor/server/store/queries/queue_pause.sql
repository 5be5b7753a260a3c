-- Pauses a queue (creating it if no task used it yet) and appends queue.paused, only
-- when it was not paused already: pausing twice changes nothing.
WITH paused AS (
    INSERT INTO queues AS q (project, id, paused, pause_reason)
    VALUES (%(project)s, %(id)s, true, %(reason)s)
    ON CONFLICT (project, id) DO UPDATE
    SET paused = true, pause_reason = excluded.pause_reason, update_time = now()
    WHERE NOT q.paused
    RETURNING q.project, q.id, q.pause_reason
),
event AS (
    INSERT INTO events (project, type, subject, data)
    SELECT project, 'queue.paused', 'projects/' || project || '/queues/' || id,
           jsonb_build_object('reason', pause_reason)
    FROM paused
)
SELECT count(*) AS changed FROM paused
