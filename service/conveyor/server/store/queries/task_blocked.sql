-- Why a task that waits is not running: the first reason that holds at the moment of
-- reading, NULL when none does (or the task does not wait). `t` is the task, `q` its
-- queue (LEFT JOIN, so NULL for a queue never configured).

-- name: reason
CASE
    WHEN t.state = 'AWAITING_APPROVAL' THEN 'AWAITING_APPROVAL'
    WHEN t.state NOT IN ('SCHEDULED', 'QUEUED') THEN NULL
    WHEN t.state = 'SCHEDULED' AND t.deps_remaining > 0 THEN 'DEPENDENCIES'
    WHEN t.schedule_time > now() THEN 'SCHEDULED_IN_FUTURE'
    WHEN q.paused THEN 'QUEUE_PAUSED'
    WHEN q.max_concurrency > 0 AND (
        SELECT count(*)
        FROM (
            SELECT 1 FROM tasks r
            WHERE r.project = t.project AND r.queue = t.queue AND r.state = 'RUNNING'
            LIMIT q.max_concurrency
        ) AS running
    ) >= q.max_concurrency THEN 'CONCURRENCY_LIMITED'
    WHEN t.concurrency_key IS NOT NULL AND (
        SELECT count(*)
        FROM (
            SELECT 1 FROM tasks r
            WHERE r.project = t.project AND r.concurrency_key = t.concurrency_key
              AND r.state = 'RUNNING'
            LIMIT greatest(t.concurrency_limit, 1)
        ) AS running
    ) >= greatest(t.concurrency_limit, 1) THEN 'CONCURRENCY_LIMITED'
    -- An empty bucket (of every worker's limits) now: see conveyor_admit (migration 0009).
    WHEN EXISTS (
        SELECT 1 FROM rate_limits b
        WHERE b.project = t.project AND b.worker = '' AND b.tokens IS NOT NULL
          AND ((b.scope = 'queue' AND b.key = t.queue AND b.rate = q.rate_limit)
               OR (b.scope = 'kind' AND b.key = t.kind))
          AND b.tokens + extract(epoch FROM now() - b.refill_time)
              * conveyor_rate_per_second(b.rate) < 1
    ) THEN 'RATE_LIMITED'
    WHEN NOT EXISTS (
        SELECT 1 FROM workers w
        WHERE w.project = t.project AND w.connected AND t.queue = ANY (w.queues)
          AND w.last_seen_time > now() - %(worker_seen_within)s::interval
    ) THEN 'NO_WORKER'
END
