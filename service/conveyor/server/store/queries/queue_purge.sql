-- PurgeQueue: every QUEUED task of the queue ends CANCELLED with reason 'purged' (so
-- every accepted task still ends in a terminal state, and its history stays), with a
-- task.cancelled event each and one queue.purged event. Returns how many.
WITH purged AS (
    -- transitions: QUEUED -> CANCELLED
    UPDATE tasks
    SET state = 'CANCELLED', state_reason = 'purged', end_time = now(), update_time = now()
    WHERE project = %(project)s AND queue = %(queue)s AND state = 'QUEUED'
    RETURNING *
),
task_events AS (
    INSERT INTO events (project, type, subject, task, data)
    SELECT project, 'task.cancelled', 'projects/' || project || '/tasks/' || id, conveyor_task_change(ROW(purged.*)::tasks),
           jsonb_build_object('reason', 'purged', 'command', %(command)s::text)
    FROM purged
),
queue_event AS (
    INSERT INTO events (project, type, subject, data)
    VALUES (%(project)s, 'queue.purged', 'projects/' || %(project)s || '/queues/' || %(queue)s,
            jsonb_build_object('purged', (SELECT count(*) FROM purged),
                               'command', %(command)s::text))
)
SELECT count(*) FROM purged
