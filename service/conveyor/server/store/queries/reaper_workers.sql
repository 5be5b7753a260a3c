-- Marks workers not heard from for `stale_ms` disconnected (event worker.disconnected):
-- their stream died with its replica, or a LeaseTasks caller went away.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
stale AS (
    SELECT w.project, w.id
    FROM workers w, clock
    WHERE w.connected
      AND w.last_seen_time < clock.now - %(stale_ms)s::bigint * interval '1 millisecond'
    LIMIT %(limit)s::integer
    FOR UPDATE OF w SKIP LOCKED
),
gone AS (
    UPDATE workers w
    SET connected = false, session = NULL
    FROM stale s
    WHERE w.project = s.project AND w.id = s.id AND w.connected
    RETURNING w.project, w.id
),
events_written AS (
    INSERT INTO events (project, type, subject, data)
    SELECT project, 'worker.disconnected', 'projects/' || project || '/workers/' || id,
           '{"reason": "not seen"}'::jsonb
    FROM gone
)
SELECT count(*) AS disconnected FROM gone
