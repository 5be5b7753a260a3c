-- One batch of events older than the cutoff. SKIP LOCKED lets replicas that prune at the
-- same time take different rows instead of waiting on (or deadlocking with) each other.
WITH doomed AS (
    SELECT project, id
    FROM events
    WHERE time < %(cutoff)s
    ORDER BY time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM events e
USING doomed
WHERE e.project = doomed.project AND e.id = doomed.id
