-- The queue metrics' state gauges: live tasks per project, queue and state, and how
-- long the oldest ready task has waited. Terminal tasks are not counted (they pile up
-- until retention deletes them, and a scan of them per scrape is what this avoids).
SELECT project, queue, state, count(*) AS tasks,
       extract(epoch FROM now() - min(schedule_time) FILTER (WHERE state = 'QUEUED'))
           AS oldest_queued_seconds
FROM tasks
WHERE state IN ('SCHEDULED', 'QUEUED', 'AWAITING_APPROVAL', 'RUNNING')
GROUP BY project, queue, state
