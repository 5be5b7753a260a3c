-- The limited lease path (store/lease_limits.py): tasks a queue's max_concurrency or
-- rate_limit, a concurrency_key, or a kind's rate limit applies to. One transaction:
-- look at the candidates, take an advisory lock per limit met (in sorted order), look
-- again (a new snapshot, which sees every lease committed under those locks), lease the
-- tasks the limits admit, and take their tokens.

-- name: candidates
-- Ready tasks of the worker's unpaused queues in lease order, with their queue's limits.
-- `queue = ANY(...)` cannot be read in lease order from tasks_ready_idx: every ready task
-- of those queues is read and sorted. A worker of one queue uses candidates_one_queue.
SELECT t.id, t.queue, t.kind, t.concurrency_key, t.concurrency_limit,
       coalesce(q.max_concurrency, 0) AS max_concurrency,
       coalesce(q.rate_limit, '') AS rate_limit
FROM tasks t
LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue
WHERE t.project = %(project)s
  AND t.state = 'QUEUED'
  AND t.queue = ANY (%(queues)s::text[])
  AND NOT coalesce(q.paused, false)
ORDER BY t.priority, t.schedule_time, t.id
LIMIT %(scan)s::integer

-- name: candidates_one_queue
-- The same for one queue: an ordered scan of tasks_ready_idx that stops at `scan` rows,
-- however many tasks are ready.
SELECT t.id, t.queue, t.kind, t.concurrency_key, t.concurrency_limit,
       coalesce(q.max_concurrency, 0) AS max_concurrency,
       coalesce(q.rate_limit, '') AS rate_limit
FROM tasks t
LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue
WHERE t.project = %(project)s
  AND t.state = 'QUEUED'
  AND t.queue = %(queue)s
  AND NOT coalesce(q.paused, false)
ORDER BY t.priority, t.schedule_time, t.id
LIMIT %(scan)s::integer

-- name: kind_limits
-- The kind buckets that apply to this worker.
SELECT r.key, r.worker
FROM rate_limits r
WHERE r.project = %(project)s AND r.scope = 'kind' AND r.worker IN ('', %(worker)s)
  AND r.key = ANY (%(kinds)s::text[])

-- name: lock
-- Transaction-level advisory locks, one per limit, taken in the order given (sorted).
-- (A volatile function in the select list runs after the sort.)
SELECT pg_advisory_xact_lock(hashtextextended(u.k, 0))
FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS u (k, i)
ORDER BY u.i

-- name: running
-- Tasks running per queue and per concurrency key (across all workers and replicas).
SELECT 'queue' AS scope, t.queue AS key, count(*) AS running
FROM tasks t
WHERE t.project = %(project)s AND t.state = 'RUNNING' AND t.queue = ANY (%(queues)s::text[])
GROUP BY t.queue
UNION ALL
SELECT 'key', t.concurrency_key, count(*)
FROM tasks t
WHERE t.project = %(project)s AND t.state = 'RUNNING'
  AND t.concurrency_key = ANY (%(keys)s::text[])
GROUP BY t.concurrency_key

-- name: buckets
-- The buckets of the given (scope, key, worker), with the database clock.
-- statement_timestamp(), not now(): read under the locks, the clock must be at least the
-- refill_time the previous holder stored. now() is this transaction's start, before it
-- waited for the locks: reading the bucket that early, then storing that time, would
-- move refill_time back and hand out the tokens of the time in between twice.
SELECT r.scope, r.key, r.worker, r.rate, r.tokens, r.refill_time, statement_timestamp() AS now
FROM rate_limits r
JOIN unnest(%(scopes)s::text[], %(keys)s::text[], %(workers)s::text[]) AS b (scope, key, worker)
  ON r.project = %(project)s AND r.scope = b.scope AND r.key = b.key AND r.worker = b.worker

-- name: clock
SELECT statement_timestamp() AS now

-- name: buckets_store
-- Writes back the buckets after a lease took tokens (queue buckets are created here).
INSERT INTO rate_limits AS r (project, scope, key, worker, rate, tokens, refill_time, update_time)
SELECT %(project)s, b.scope, b.key, b.worker, b.rate, b.tokens, b.refill_time, now()
FROM unnest(
    %(scopes)s::text[], %(keys)s::text[], %(workers)s::text[], %(rates)s::text[],
    %(tokens)s::double precision[], %(refill_times)s::timestamptz[]
) AS b (scope, key, worker, rate, tokens, refill_time)
ON CONFLICT (project, scope, key, worker) DO UPDATE
SET rate = EXCLUDED.rate, tokens = EXCLUDED.tokens, refill_time = EXCLUDED.refill_time,
    update_time = now()
