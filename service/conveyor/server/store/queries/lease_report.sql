-- Settles a worker's reports and leases its next tasks, in one statement and one commit:
-- the hot path of a worker (complete one, take the next). Each part may be empty.
--
-- Reports are fenced: a report changes its task only while the task is RUNNING under the
-- report's lease_id; the caller looks up reports that matched nothing (lease_lookup).
-- Leasing takes QUEUED tasks of the worker's queues that are not paused, in lease order
-- (priority, schedule_time, id), skipping rows another leaser holds.
--
-- Returns one row per changed task: `outcome` ('succeeded', 'failed', 'leased'),
-- `rate_wait` (NULL) + tasks.*; and a row 'rate_wait' (no task) when a rate limit held
-- back a ready task.
--
-- Composed by store/leases.py from the blocks below, only those a call needs: completes
-- when it completes, fails when it fails, attempts_ended and freed when it reports,
-- one of the `ready` blocks + admit + lease when it leases; the events and rows blocks
-- are unions of one part per block present (a UNION ALL of `parts`, in order). Every
-- block left out is executor start-up a call does not pay: with all of them, a call
-- that leases one task started a plan of ~200 nodes (~0.3 ms of a 0.5 ms statement).
-- A worker of one queue gets an ordered index scan that stops at `limit` (the hot case);
-- `queue = ANY(...)` cannot be read in lease order from the index, so several queues
-- cost a sort of their ready tasks.

-- name: completes
completes AS (
    SELECT *
    FROM unnest(
        %(c_ids)s::uuid[], %(c_lease_ids)s::uuid[], %(c_results)s::jsonb[],
        %(c_summaries)s::text[], %(c_resume_tokens)s::text[]
    ) AS c (id, lease_id, result, summary, resume_token)
),
succeeded AS (
    -- transitions: RUNNING -> SUCCEEDED
    UPDATE tasks t
    SET state = 'SUCCEEDED',
        result = c.result,
        summary = c.summary,
        -- NULL keeps the token the task has.
        resume_token = coalesce(c.resume_token, t.resume_token),
        lease_expire_time = NULL,
        end_time = now(),
        update_time = now()
    FROM completes c
    -- `= ANY` as well as the join: it makes the plan read the reported tasks by key,
    -- whatever the estimates (a join alone was planned as a scan of every RUNNING task
    -- of the project).
    WHERE t.project = %(project)s AND t.id = ANY (%(c_ids)s::uuid[]) AND t.id = c.id
      AND t.lease_id = c.lease_id AND t.state = 'RUNNING'
    RETURNING t.*
)

-- name: fails
fail_targets AS (
    SELECT t.project, t.id, t.attempt, f.error,
           CASE
               WHEN t.cancel_requested THEN 'INTERRUPTED'
               WHEN f.retryable AND t.attempt < t.max_attempts THEN 'SCHEDULED'
               ELSE 'FAILED'
           END AS next_state,
           conveyor_backoff_ms(
               t.backoff, t.attempt, t.initial_backoff_ms, t.max_backoff_ms,
               coalesce(%(rand)s::double precision, random())
           ) AS delay_ms
    FROM unnest(
        %(f_ids)s::uuid[], %(f_lease_ids)s::uuid[], %(f_errors)s::jsonb[],
        %(f_retryable)s::boolean[]
    ) AS f (id, lease_id, error, retryable)
    JOIN tasks t
      ON t.project = %(project)s AND t.id = ANY (%(f_ids)s::uuid[]) AND t.id = f.id
     AND t.lease_id = f.lease_id AND t.state = 'RUNNING'
    FOR UPDATE OF t
),
failed AS (
    -- transitions: RUNNING -> SCHEDULED, RUNNING -> FAILED, RUNNING -> INTERRUPTED
    UPDATE tasks t
    SET state = ft.next_state,
        error = ft.error,
        schedule_time = CASE
            WHEN ft.next_state = 'SCHEDULED' THEN now() + ft.delay_ms * interval '1 millisecond'
            ELSE t.schedule_time
        END,
        end_time = CASE WHEN ft.next_state = 'SCHEDULED' THEN NULL ELSE now() END,
        lease_expire_time = NULL,
        update_time = now()
    FROM fail_targets ft
    WHERE t.project = %(project)s AND t.id = ANY (%(f_ids)s::uuid[])
      AND t.id = ft.id AND t.state = 'RUNNING'
    RETURNING t.*
)

-- name: attempts_ended
-- The capitals: the union of attempts_ended_s and _f, of the reports present.
attempts_ended AS (
    UPDATE task_attempts a
    SET end_time = now(), outcome = ended.outcome, error = ended.error
    FROM (ENDED) AS ended
    WHERE a.project = ended.project AND a.task_id = ended.id AND a.attempt = ended.attempt
)

-- name: attempts_ended_s
SELECT project, id, attempt, 'SUCCEEDED' AS outcome, NULL::jsonb AS error FROM succeeded

-- name: attempts_ended_f
SELECT project, id, attempt, 'FAILED' AS outcome, error FROM failed

-- name: ready_one_queue
-- Tasks no limit applies to: not in a queue with max_concurrency or a rate_limit,
-- without a concurrency_key, of a kind without a rate limit (for every worker or this
-- one), taken in lease order skipping rows another leaser holds. The others are
-- admitted by conveyor_admit (migrations/0009) under the advisory locks of their limits,
-- when the unlimited ones did not fill the take (the admit block).
-- In a function (migrations/0037) planned with sorting off: it reads tasks_ready_idx in
-- order and stops at `limit` even when stale statistics make a sort of the queue's
-- whole backlog look cheaper.
ready_plain AS MATERIALIZED (
    SELECT %(project)s::text AS project, r.id
    FROM conveyor_ready_tasks(%(project)s, %(queue)s, %(worker)s, %(limit)s::integer) AS r (id)
)

-- name: ready_many_queues
ready_plain AS MATERIALIZED (
    SELECT t.project, t.id
    FROM tasks t
    WHERE t.project = %(project)s AND t.state = 'QUEUED' AND t.queue = ANY (%(queues)s::text[])
      AND t.concurrency_key IS NULL
      AND coalesce(t.kind <> ALL ((SELECT conveyor_rate_kinds(%(project)s, %(worker)s))::text[]), true)
      AND coalesce(t.queue <> ALL ((SELECT conveyor_closed_queues(%(project)s, true))::text[]), true)
    ORDER BY t.priority, t.schedule_time, t.id
    LIMIT %(limit)s::integer
    FOR UPDATE OF t SKIP LOCKED
)

-- name: admit
-- The limited part, after either ready block: only when the unlimited part left room
-- and a limited task may wait: a queue has limits, or the probe finds one candidate (on
-- a drained queue without limits the function is not called). conveyor_admit takes the
-- locks of the candidates' limits, makes sure what it read holds under them, and
-- chooses. The tasks this statement reports on are not counted as running. (The unlimited part's tasks are never candidates in this
-- statement's snapshot; the function reads in its own, and is told them.)
-- SKIP LOCKED: a chosen task another transaction holds (a cancel) is left for the next
-- lease, rather than waiting for it while holding the advisory locks.
admitted AS MATERIALIZED (
    SELECT a.*
    FROM (SELECT %(limit)s::integer - (SELECT count(*) FROM ready_plain)::integer AS want) AS s,
         conveyor_admit(
             %(project)s, %(worker)s, %(queues)s::text[], s.want,
             least(%(scan)s::integer, greatest(%(window)s::integer, 4 * s.want)),
             %(scan)s::integer,
             ARRAY(SELECT id FROM ready_plain),
             %(c_lease_ids)s::uuid[] || %(f_lease_ids)s::uuid[]
         ) AS a
    WHERE s.want > 0
      AND (%(queues)s::text[] && (SELECT conveyor_limited_queues(%(project)s))::text[]
           OR EXISTS (
               SELECT FROM conveyor_lease_candidates(
                   %(project)s, %(queues)s::text[], 1, NULL,
                   (SELECT conveyor_rate_kinds(%(project)s, %(worker)s))
               )
           ))
),
ready_admitted AS (
    SELECT t.project, t.id
    FROM tasks t
    WHERE t.project = %(project)s AND t.id = ANY ((SELECT a.chosen FROM admitted a)::uuid[])
      AND t.state = 'QUEUED'
    FOR UPDATE OF t SKIP LOCKED
),
ready AS (
    SELECT project, id FROM ready_plain
    UNION ALL
    SELECT project, id FROM ready_admitted
),
-- The token buckets the admission took from, written back (still under its locks; it
-- read them again if anything committed between its read and its locks). A queue's
-- bucket is created at its first lease.
admitted_buckets AS (
    SELECT b.*
    FROM admitted a,
         unnest(a.bscope, a.bkey, a.bworker, a.brate, a.btok, a.bat, a.btaken, a.bstored)
             AS b (scope, key, worker, rate, tokens, at, taken, stored)
    WHERE b.taken > 0
),
buckets_updated AS (
    UPDATE rate_limits r
    SET rate = b.rate, tokens = b.tokens, refill_time = b.at, update_time = now()
    FROM admitted_buckets b
    WHERE b.stored AND r.project = %(project)s AND r.scope = b.scope AND r.key = b.key
      AND r.worker = b.worker
),
buckets_created AS (
    INSERT INTO rate_limits AS r (project, scope, key, worker, rate, tokens, refill_time, update_time)
    SELECT %(project)s, b.scope, b.key, b.worker, b.rate, b.tokens, b.at, now()
    FROM admitted_buckets b
    WHERE NOT b.stored
    ON CONFLICT (project, scope, key, worker) DO UPDATE
    SET rate = EXCLUDED.rate, tokens = EXCLUDED.tokens, refill_time = EXCLUDED.refill_time,
        update_time = now()
)

-- name: admit_check
-- Stands for the admit block where the server expects no limit to apply (store/leases.py):
-- conveyor_admit_check (migrations/0042) raises, rolling the whole statement back, where
-- the admit block would have called conveyor_admit; the server then runs the statement
-- with the admit block. Read by the rows (rate_wait), so it runs whatever was leased;
-- not called at all when the unlimited part filled the take (a plpgsql call per lease
-- of a c1 worker: 696 -> 683 us per complete + lease, 175 -> 166 on a drained queue).
admitted AS MATERIALIZED (
    SELECT NULL::uuid[] AS chosen, NULL::double precision AS rate_wait, NULL::timestamptz AS clock
    FROM (SELECT %(limit)s::integer - count(*)::integer AS want FROM ready_plain) AS s
    WHERE s.want > 0
      AND NOT conveyor_admit_check(%(project)s, %(worker)s, %(queues)s::text[], s.want)
),
ready AS (
    SELECT project, id FROM ready_plain
)

-- name: lease
-- The clock of the admission when there was one, read once its locks were held: the
-- statement's start may precede the end of a task whose limit it waited for, and a
-- start must not.
clock AS (
    SELECT coalesce((SELECT a.clock FROM admitted a), statement_timestamp()) AS now
),
leased AS (
    -- transitions: QUEUED -> RUNNING
    UPDATE tasks t
    SET state = 'RUNNING',
        state_reason = '',
        attempt = t.attempt + 1,
        worker = %(worker)s,
        lease_id = gen_random_uuid(),
        lease_expire_time =
            k.now + coalesce(%(lease_ms)s::bigint, t.lease_duration_ms) * interval '1 millisecond',
        start_time = k.now,
        end_time = NULL,
        update_time = k.now
    FROM clock k
    -- By key: joined to `ready`, a generic plan sized for dozens of ready rows hashed
    -- them against a scan of the whole table (5 ms at 16,000 tasks).
    WHERE t.project = %(project)s AND t.id = ANY (ARRAY(SELECT r.id FROM ready r))
    RETURNING t.*
),
attempts_started AS (
    INSERT INTO task_attempts (project, task_id, attempt, worker, lease_id, start_time)
    SELECT project, id, attempt, worker, lease_id, start_time FROM leased
)

-- name: events
-- The capitals: the union of events_s, _f and _l, of the blocks present.
events_written AS (
    INSERT INTO events (project, type, subject, task)
    PARTS
)

-- name: events_s
SELECT s.project, 'task.succeeded', 'projects/' || s.project || '/tasks/' || s.id, conveyor_task_change(ROW(s.*)::tasks)
FROM succeeded s

-- name: events_f
SELECT f.project,
       CASE f.state
           WHEN 'SCHEDULED' THEN 'task.retrying'
           WHEN 'FAILED' THEN 'task.failed'
           ELSE 'task.interrupted'
       END,
       'projects/' || f.project || '/tasks/' || f.id, conveyor_task_change(ROW(f.*)::tasks)
FROM failed f

-- name: events_l
SELECT l.project, 'task.started', 'projects/' || l.project || '/tasks/' || l.id, conveyor_task_change(ROW(l.*)::tasks)
FROM leased l

-- name: ended
-- The capitals: the union of ended_s and _f, of the reports present.
ended AS (
    PARTS
)

-- name: ended_s
SELECT project, id, queue, concurrency_key, concurrency_limit FROM succeeded

-- name: ended_f
SELECT project, id, queue, concurrency_key, concurrency_limit FROM failed

-- name: not_leased
-- Stands for the lease block in a call that only reports (the freed part reads it).
leased AS (
    SELECT NULL::text AS queue, NULL::text AS concurrency_key WHERE false
)

-- name: rows_s
-- The tasks' rows: a UNION ALL of the parts below of the blocks present, the first
-- naming the columns. The words in capitals are filled in by store/leases.py: with s.*,
-- f.*, l.* and (NULL::tasks).* when the caller answers with the ended tasks; else every
-- part lists TaskRow's columns by name, and an ended task's are NULL but for those
-- its metrics read (the acks of a batch carry no task: the full rows cost the database
-- their output and the server their parsing, per task).
SELECT 'succeeded' AS outcome, NULL::double precision AS rate_wait, ENDED_S FROM succeeded s

-- name: rows_f
SELECT 'failed' AS outcome, NULL::double precision AS rate_wait, ENDED_F FROM failed f

-- name: rows_l
SELECT 'leased' AS outcome, NULL::double precision AS rate_wait, LEASED_L FROM leased l

-- name: rows_rate_wait
-- Seconds until a rate-limited task could start, when one was held back.
SELECT 'rate_wait' AS outcome, a.rate_wait, NO_TASK FROM admitted a
WHERE a.rate_wait IS NOT NULL

-- name: rows_freed
-- Never a row: wakes the leasers of queues where an ended task frees a limited place (a
-- NOTIFY sent at commit; repeats fold): where the others running under its key or queue
-- fill the limit but for it. A limit with room held no one back, and waking every leaser
-- of a busy keyed queue at each end would cost each of them a lease. Checked once per
-- queue and key, and not where this statement leased as many tasks of the same queue
-- and key as ended (a worker completing one and taking the next: the place is taken
-- again). This statement's snapshot still counts the ended tasks as running, so they
-- are left out by id.
SELECT 'freed' AS outcome, NULL::double precision AS rate_wait, x.* FROM (SELECT NO_TASK) AS x
WHERE (
    SELECT count(pg_notify('conveyor_tasks', e.project || '/' || e.queue))
    FROM (
        SELECT project, queue, concurrency_key, concurrency_limit, count(*) AS n
        FROM ended
        GROUP BY project, queue, concurrency_key, concurrency_limit
    ) AS e
    WHERE e.n > (SELECT count(*) FROM leased l
                 WHERE l.queue = e.queue AND l.concurrency_key IS NOT DISTINCT FROM e.concurrency_key)
      AND ((e.concurrency_key IS NOT NULL
            AND (SELECT count(*)
                 FROM (SELECT FROM tasks t
                       WHERE t.project = e.project AND t.state = 'RUNNING'
                         AND t.concurrency_key = e.concurrency_key
                         AND t.id <> ALL (ARRAY(SELECT id FROM ended))
                       LIMIT greatest(1, e.concurrency_limit) - 1) AS r)
                >= greatest(1, e.concurrency_limit) - 1)
        OR EXISTS (
            SELECT FROM queues q
            WHERE q.project = e.project AND q.id = e.queue AND q.max_concurrency > 0
              AND (SELECT count(*)
                   FROM (SELECT FROM tasks t
                         WHERE t.project = q.project AND t.state = 'RUNNING' AND t.queue = q.id
                           AND t.id <> ALL (ARRAY(SELECT id FROM ended))
                         LIMIT q.max_concurrency - 1) AS r)
                  >= q.max_concurrency - 1))
) < 0
