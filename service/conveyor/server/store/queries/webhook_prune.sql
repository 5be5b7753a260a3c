-- One batch of finished webhook deliveries (and, by cascade, their attempts) older than
-- the cutoff; SKIP LOCKED so replicas pruning together take different rows.
WITH doomed AS (
    SELECT id
    FROM webhook_deliveries
    WHERE state <> 'PENDING' AND finish_time < %(cutoff)s
    ORDER BY finish_time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM webhook_deliveries w
USING doomed
WHERE w.id = doomed.id
