-- Resumes a paused queue (creating it, unpaused, if no task used it yet), appends
-- queue.resumed and wakes its workers; resuming a queue that is not paused changes
-- nothing.
WITH ensured AS (
    INSERT INTO queues (project, id) VALUES (%(project)s, %(id)s)
    ON CONFLICT DO NOTHING
),
resumed AS (
    UPDATE queues
    SET paused = false, pause_reason = '', update_time = now()
    WHERE project = %(project)s AND id = %(id)s AND paused
    RETURNING project, id
),
event AS (
    INSERT INTO events (project, type, subject)
    SELECT project, 'queue.resumed', 'projects/' || project || '/queues/' || id
    FROM resumed
),
woken AS (
    SELECT count(pg_notify('conveyor_tasks', project || '/' || id)) AS n FROM resumed
)
SELECT count(*) AS changed FROM resumed, woken
