-- Stores a snapshot taken by queue_metrics.sql; %(queues)s is its rows as a JSON array.
INSERT INTO queue_metrics_snapshot (id, take_time, queues)
VALUES (1, now(), %(queues)s)
ON CONFLICT (id) DO UPDATE SET take_time = EXCLUDED.take_time, queues = EXCLUDED.queues
