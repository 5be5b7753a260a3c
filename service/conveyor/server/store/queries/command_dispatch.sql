-- Marks the open commands addressed to a worker DISPATCHED (those ISSUED, and with
-- %(redeliver)s those DISPATCHED to an earlier stream) and returns them, oldest first.
-- Expired ones are left to the timeout loop.
WITH due AS (
    SELECT project, sequence FROM command_states
    WHERE project = %(project)s AND worker = %(worker)s
      AND (status = 'ISSUED' OR (%(redeliver)s AND status = 'DISPATCHED'))
      AND (deadline IS NULL OR deadline > now())
    ORDER BY sequence
    FOR UPDATE SKIP LOCKED
),
changed AS (
    UPDATE command_states s
    SET status = 'DISPATCHED', dispatch_time = now(), update_time = now()
    FROM due
    WHERE s.project = due.project AND s.sequence = due.sequence
    RETURNING s.*
),
event AS (
    INSERT INTO events (project, type, subject, data)
    SELECT project, 'command.dispatched', 'projects/' || project || '/commands/' || sequence,
           jsonb_build_object('worker', worker)
    FROM changed
)
SELECT c.sequence, c.verb, c.args
FROM changed s JOIN commands c USING (project, sequence)
ORDER BY c.sequence
