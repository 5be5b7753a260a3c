-- 0005: flow control: rate-limit token buckets, and indexes for the limits of leasing.

-- Token buckets shared by every replica, one row per limit:
--   scope 'queue': key = queue id, worker = '' (rate copied from queues.rate_limit; the
--                  row is created by the first lease that meets the limit);
--   scope 'kind':  key = task kind; worker = '' for every worker, else the worker id (a
--                  limit of that worker alone). CommandService.SetRateLimit upserts it:
--                    INSERT INTO rate_limits (project, scope, key, worker, rate)
--                    VALUES (p, 'kind', kind, worker, '100/m')
--                    ON CONFLICT (project, scope, key, worker)
--                    DO UPDATE SET rate = EXCLUDED.rate, tokens = NULL, refill_time = now();
--                  and a rate of "0" deletes the row.
-- `rate` is the normalised "<count>/<s|m|h>" of domain/rates.py. `tokens` is the bucket's
-- content at `refill_time` (NULL: full); leasing refills it by the rate since then, up
-- to the bucket's burst, and takes one token per leased task, under an advisory lock.
CREATE TABLE rate_limits (
    project text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    scope text NOT NULL,
    key text NOT NULL,
    worker text NOT NULL DEFAULT '',
    rate text NOT NULL,
    tokens double precision,
    refill_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, scope, key, worker),
    CONSTRAINT rate_limits_scope_valid CHECK (scope IN ('queue', 'kind'))
);

-- Running tasks per queue (max_concurrency) and per concurrency key.
CREATE INDEX tasks_running_queue_idx ON tasks (project, queue) WHERE state = 'RUNNING';
CREATE INDEX tasks_running_key_idx ON tasks (project, concurrency_key)
    WHERE state = 'RUNNING' AND concurrency_key IS NOT NULL;

-- For the lease statement (kept short: psycopg caches the parse of statements < 4 KiB).
-- Kinds rate limited for worker `w` (its own limits and everyone's).
CREATE FUNCTION conveyor_rate_kinds(p text, w text) RETURNS text[]
LANGUAGE sql STABLE
RETURN ARRAY(
    SELECT r.key FROM rate_limits r
    WHERE r.project = p AND r.scope = 'kind' AND r.worker IN ('', w));

-- Queues not leased from by the unlimited path: paused ones, and with `limits` those
-- with a max_concurrency or a rate_limit.
CREATE FUNCTION conveyor_closed_queues(p text, limits boolean) RETURNS text[]
LANGUAGE sql STABLE
RETURN ARRAY(
    SELECT q.id FROM queues q
    WHERE q.project = p
      AND (q.paused OR (limits AND (q.max_concurrency > 0 OR q.rate_limit <> ''))));

-- Queues with a max_concurrency or a rate_limit.
CREATE FUNCTION conveyor_limited_queues(p text) RETURNS text[]
LANGUAGE sql STABLE
RETURN ARRAY(
    SELECT q.id FROM queues q
    WHERE q.project = p AND (q.max_concurrency > 0 OR q.rate_limit <> ''));

-- A task of queue `q` with concurrency key `k` ended: if a limit held others back, wake
-- the leasers of its queue (a NOTIFY sent at commit; repeats in one transaction fold).
CREATE FUNCTION conveyor_wake_limited(p text, q text, k text) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    IF k IS NOT NULL OR EXISTS (
        SELECT FROM queues WHERE project = p AND id = q AND max_concurrency > 0
    ) THEN
        PERFORM pg_notify('conveyor_tasks', p || '/' || q);
        RETURN 1;
    END IF;
    RETURN 0;
END
$$;
