-- The queue metrics' shared snapshot and its age in seconds (no row: never taken).
SELECT queues, extract(epoch FROM now() - take_time) AS age_seconds
FROM queue_metrics_snapshot
WHERE id = 1
