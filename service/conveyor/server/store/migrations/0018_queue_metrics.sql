-- 0018: the queue metrics' shared snapshot. One replica per interval runs the grouped
-- count over the live tasks (queue_metrics.sql) and stores the answer here; the other
-- replicas read this one row instead of counting again. UNLOGGED: it is a cache, rebuilt
-- within an interval after a crash, and not worth WAL or a standby's copy.
CREATE UNLOGGED TABLE queue_metrics_snapshot (
    id integer PRIMARY KEY CHECK (id = 1),
    take_time timestamptz NOT NULL,
    queues jsonb NOT NULL
);
