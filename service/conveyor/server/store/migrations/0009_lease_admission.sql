-- 0009: the limited lease path inside the lease statement. Tasks that a limit applies
-- to (a queue's max_concurrency or rate_limit, a concurrency_key, a kind's rate limit)
-- are admitted by conveyor_admit, which the lease statement (queries/lease_report.sql)
-- calls when its unlimited part did not fill the take. It was a transaction of about
-- ten statements driven from Python; as one function call it costs one round trip.
--
-- Limits, all held across every worker and replica (the state is in PostgreSQL, read
-- and written under transaction-level advisory locks, one per limit):
-- - a queue's max_concurrency (0: none; 1: the sequential queue, strictly one at a time
--   in lease order: priority, schedule_time, id);
-- - a task's concurrency_key with its concurrency_limit: at most that many RUNNING
--   tasks share the key;
-- - rate limits as token buckets (rate_limits): a queue's rate_limit, and per-kind limits
--   (for every worker, or for one). A bucket of rate r per second holds up to
--   conveyor_rate_burst(r) tokens: a fifth of a second's worth, at least one, so "10/s"
--   gives about ten spread-out starts a second instead of bursts of ten (and a leaser
--   that looks a little late loses nothing). Each lease takes one token from every
--   bucket that applies.
--
-- Advisory lock names (hashed with hashtextextended(name, 0)), taken in "C" order so two
-- leasers never wait for each other in a cycle:
--   conveyor/queue/{project}/{queue}             a queue with max_concurrency or rate_limit
--   conveyor/key/{project}/{concurrency_key}
--   conveyor/rate/{project}/queue/{queue}/       the queue's bucket
--   conveyor/rate/{project}/kind/{kind}/{worker} a kind's bucket (worker '' for everyone)
-- A bucket's name is also its lock's.

CREATE TYPE conveyor_lease_candidate AS (
    id uuid,
    queue text,
    kind text,
    concurrency_key text,
    concurrency_limit integer,
    max_concurrency integer,
    rate_limit text
);

-- Tokens a second of a normalised rate "<count>/<s|m|h>" (domain/rates.py).
CREATE FUNCTION conveyor_rate_per_second(rate text) RETURNS double precision
LANGUAGE sql IMMUTABLE
RETURN split_part(rate, '/', 1)::double precision
    / CASE split_part(rate, '/', 2) WHEN 'm' THEN 60 WHEN 'h' THEN 3600 ELSE 1 END;

-- The most tokens a bucket of `per_second` holds.
CREATE FUNCTION conveyor_rate_burst(per_second double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE
RETURN greatest(1, floor(per_second / 5));

-- The tokens at `at` of a bucket of `rate` that stored `tokens` at `refill_time` under
-- `stored_rate`: refilled up to its burst; a new bucket or a changed rate starts full.
CREATE FUNCTION conveyor_bucket_tokens(
    rate text, stored_rate text, tokens double precision, refill_time timestamptz,
    at timestamptz
) RETURNS double precision
LANGUAGE sql IMMUTABLE
RETURN CASE
    WHEN tokens IS NULL OR stored_rate IS DISTINCT FROM rate
        THEN conveyor_rate_burst(conveyor_rate_per_second(rate))
    ELSE least(
        conveyor_rate_burst(conveyor_rate_per_second(rate)),
        tokens + greatest(0, extract(epoch FROM at - refill_time))::double precision
                 * conveyor_rate_per_second(rate))
END;

-- The first `size` ready tasks of queues `qs` that a limit applies to, in lease order,
-- leaving out `skip`, with their queue's limits; `kinds`: the kinds rate limited for the
-- worker. Each queue is read in order from tasks_ready_idx and stops at `size`, so a
-- long backlog costs nothing. (A SQL function: inlined into the statement calling it.)
CREATE FUNCTION conveyor_lease_candidates(
    p text, qs text[], size integer, skip uuid[], kinds text[]
) RETURNS SETOF conveyor_lease_candidate
LANGUAGE sql STABLE AS $$
    SELECT c.id, c.queue, c.kind, c.concurrency_key, c.concurrency_limit,
           c.max_concurrency, c.rate_limit
    FROM (SELECT DISTINCT u.queue FROM unnest(qs) AS u (queue)) AS u
    LEFT JOIN queues q ON q.project = p AND q.id = u.queue
    CROSS JOIN LATERAL (
        SELECT t.id, t.queue, t.kind, t.concurrency_key, t.concurrency_limit,
               coalesce(q.max_concurrency, 0) AS max_concurrency,
               coalesce(q.rate_limit, '') AS rate_limit,
               t.priority, t.schedule_time
        FROM tasks t
        WHERE t.project = p AND t.state = 'QUEUED' AND t.queue = u.queue
          AND (coalesce(q.max_concurrency, 0) > 0 OR coalesce(q.rate_limit, '') <> ''
               OR t.concurrency_key IS NOT NULL OR t.kind = ANY (kinds))
          AND t.id <> ALL (coalesce(skip, '{}'))
        ORDER BY t.priority, t.schedule_time, t.id
        LIMIT size
    ) AS c
    WHERE NOT coalesce(q.paused, false)
    ORDER BY c.priority, c.schedule_time, c.id
    LIMIT size
$$;

-- The names of the advisory locks of a candidate's limits (NULL where a limit does not
-- apply): its queue (`mc`: max_concurrency, `rl`: rate_limit), concurrency key `k`, and
-- kind when `kinds` (the kinds rate limited for worker `w`) has it: the buckets of every
-- worker and of `w` (one of them may not exist; its lock costs nothing). In "C" order
-- ("key" < "queue" < "rate", "kind" < "queue"), so one candidate's may be taken as they
-- come.
CREATE FUNCTION conveyor_lease_locks(
    p text, w text, queue text, kind text, k text, mc integer, rl text, kinds text[]
) RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY[
    'conveyor/key/' || p || '/' || k,
    CASE WHEN mc > 0 OR rl <> '' THEN 'conveyor/queue/' || p || '/' || queue END,
    CASE WHEN kind = ANY (kinds) THEN 'conveyor/rate/' || p || '/kind/' || kind || '/' END,
    CASE WHEN kind = ANY (kinds) THEN 'conveyor/rate/' || p || '/kind/' || kind || '/' || w END,
    CASE WHEN rl <> '' THEN 'conveyor/rate/' || p || '/queue/' || queue || '/' END
];

-- The sorted names of the locks the first `size` candidates need, but not those in `held`
-- (NULL: none). (A one-row set rather than a value: a SQL function is inlined only as a
-- set.)
CREATE FUNCTION conveyor_lease_lock_names(
    p text, w text, qs text[], size integer, skip uuid[], kinds text[], held text[]
) RETURNS TABLE (names text[])
LANGUAGE sql STABLE AS $$
    SELECT array_agg(DISTINCT l.name COLLATE "C" ORDER BY l.name COLLATE "C")
    FROM conveyor_lease_candidates(p, qs, size, skip, kinds) AS x,
         unnest(conveyor_lease_locks(
             p, w, x.queue, x.kind, x.concurrency_key, x.max_concurrency, x.rate_limit, kinds
         )) AS l (name)
    WHERE l.name IS NOT NULL AND l.name <> ALL (held)
$$;

-- Admits up to `want` ready tasks of queues `qs` that limits apply to, for worker `w`,
-- and takes their tokens; the lease statement then leases `chosen` and writes back the
-- buckets that gave tokens (the b* arrays, one element per bucket read: btaken > 0;
-- bstored: whether its row exists).
-- Locks are held until that statement's transaction ends. Also returns the seconds
-- until a rate-limited candidate could start (NULL: none was), and the clock read once
-- the tasks were read under the locks (a lease's start must not precede an end it
-- waited for).
--
-- A lease of one from one queue (a worker taking its next task) first tries the queue's
-- head alone (see the body); the general way follows when that does not decide.
-- The first look reads a window of `size` candidates (max(4, 4 x want): the head of the
-- queue is what a lease takes, and each candidate costs locks and reads) with their
-- running counts and buckets and the names of their limits' locks, then takes those
-- locks, waiting, in "C" order. What it read holds under the locks unless a transaction
-- committed in between: only when the snapshot after the locks differs from the one it
-- read in does it read again (a quiet queue's lease reads once). The next look, at up
-- to `scan` candidates, comes only when the window was full and limits of the
-- candidates' own (concurrency keys, kind buckets) or other queues held it back, so that
-- tasks further down may pass. It takes only the locks it gets at once
-- (pg_try_advisory_xact_lock): the first look's locks are still held, and waiting for
-- more out of order could deadlock.
--
-- `skip`: tasks the statement's unlimited part already took. `freed`: the leases (each
-- names one attempt of one task) the same statement completes or fails, not counted as
-- running (whether this function sees the statement's own updates depends on the order
-- PostgreSQL runs the statement's parts in, which nothing promises).
-- A candidate whose limit was not locked (a limit that appeared after the locks were
-- taken) is left for the next lease.
--
-- Few statements, each cheap, and few expressions (each is prepared at its first use in
-- a transaction, and a lease is one): this runs inside a worker's every lease of a
-- limited queue. Maps are jsonb objects: rq (running per queue with max_concurrency), rk
-- (running per concurrency key); buckets are parallel arrays.
CREATE FUNCTION conveyor_admit(
    p text, w text, qs text[], want integer, size integer, scan integer,
    skip uuid[], freed uuid[],
    OUT chosen uuid[], OUT rate_wait double precision, OUT clock timestamptz,
    OUT bscope text[], OUT bkey text[], OUT bworker text[], OUT brate text[],
    OUT btok double precision[], OUT bat timestamptz[], OUT btaken integer[],
    OUT bstored boolean[]
)
LANGUAGE plpgsql AS $$
DECLARE
    -- 'first', 'again' (the first look read again under its locks), 'wider'.
    look text := 'first';
    held text[] := '{}';
    keys text[];
    k text;
    snap text;
    kinds text[];
    cands conveyor_lease_candidate[];
    c conveyor_lease_candidate;
    rq jsonb := '{}';
    rk jsonb := '{}';
    -- Buckets, one element each (with the OUT b* arrays): name, tokens a second.
    bn text[] := '{}';
    bps double precision[];
    own integer := 0;
    names text[];
    n text;
    i integer;
    wait double precision;
    unheld boolean;
    kind_empty boolean;
    -- The head alone (see below): the candidate, whether kinds are limited, the running
    -- counts of its queue and key, its queue's bucket as stored.
    hid uuid;
    hqueue text;
    hkey text;
    hlimit integer;
    hmc integer;
    hrl text;
    kind_limits boolean;
    hq bigint;
    hk bigint;
    rtok double precision;
    rrate text;
    rtime timestamptz;
    rstored boolean;
BEGIN
    -- The other OUT values start NULL: no clock (the statement's is used), no buckets
    -- (the reads append to them). Fewer expressions: each costs its first use in every
    -- transaction, and a lease is one.
    chosen := '{}';
    IF want <= 0 THEN
        RETURN;
    END IF;
    -- A lease of one from one queue (a worker taking its next task) first tries the head
    -- alone, in one small statement: it takes the locks of the head's limits, waiting, in
    -- "C" order (as conveyor_lease_locks lists them), and reads the running counts of its queue and key and
    -- its queue's bucket. The same snapshot check makes the reads good. When the head may
    -- start, that is the lease; when its queue is full or its queue's bucket empty, no
    -- task of the queue may. Otherwise (its key is full, a commit came in between, kinds
    -- are rate limited) the general look below decides, with these locks held and taking
    -- the others only when it gets them at once.
    IF want = 1 AND cardinality(qs) = 1 THEN
        WITH kl AS (
            SELECT EXISTS (
                SELECT FROM rate_limits r
                WHERE r.project = p AND r.scope = 'kind' AND r.worker IN ('', w)
            ) AS limited
        ),
        h AS MATERIALIZED (
            SELECT hh.*
            FROM kl, conveyor_lease_candidates(p, qs, 1, skip, '{}') AS hh
            WHERE NOT kl.limited
        )
        SELECT (SELECT kl.limited FROM kl),
               h.id, h.queue, h.concurrency_key, h.concurrency_limit, h.max_concurrency,
               h.rate_limit,
               clock_timestamp(),
               pg_current_snapshot()::text,
               ARRAY(
                   SELECT l.name
                   FROM unnest(conveyor_lease_locks(
                       p, w, h.queue, h.kind, h.concurrency_key, h.max_concurrency,
                       h.rate_limit, '{}'
                   )) AS l (name)
                   WHERE l.name IS NOT NULL
                     AND pg_advisory_xact_lock(hashtextextended(l.name, 0)) IS NOT NULL
               ),
               (SELECT count(*) FROM tasks t
                WHERE h.max_concurrency > 0 AND t.project = p AND t.state = 'RUNNING'
                  AND t.queue = h.queue AND t.lease_id <> ALL (coalesce(freed, '{}'))),
               (SELECT count(*) FROM tasks t
                WHERE t.project = p AND t.state = 'RUNNING'
                  AND t.concurrency_key = h.concurrency_key
                  AND t.lease_id <> ALL (coalesce(freed, '{}'))),
               r.tokens, r.rate, r.refill_time, r.project IS NOT NULL
        INTO kind_limits, hid, hqueue, hkey, hlimit, hmc, hrl, clock, snap, held, hq, hk,
             rtok, rrate, rtime, rstored
        FROM (SELECT) AS one
        LEFT JOIN h ON true
        LEFT JOIN rate_limits r
          ON h.rate_limit <> '' AND r.project = p AND r.scope = 'queue' AND r.key = h.queue
         AND r.worker = '';
        IF hid IS NULL AND NOT kind_limits THEN
            RETURN;
        END IF;
        IF hid IS NOT NULL AND pg_current_snapshot()::text = snap THEN
            -- The queue's own limits hold back every task of the queue alike.
            IF hmc > 0 AND hq >= hmc THEN
                RETURN;
            END IF;
            IF hrl <> '' THEN
                rtok := conveyor_bucket_tokens(hrl, rrate, rtok, rtime, clock);
                IF rtok < 1 THEN
                    rate_wait := (1 - rtok) / conveyor_rate_per_second(hrl);
                    RETURN;
                END IF;
            END IF;
            IF hkey IS NULL OR hk < greatest(1, hlimit) THEN
                chosen := ARRAY[hid];
                IF hrl <> '' THEN
                    bscope := '{queue}'; bkey := ARRAY[hqueue]; bworker := '{""}';
                    brate := ARRAY[hrl]; btok := ARRAY[rtok - 1];
                    bat := ARRAY[clock]; btaken := '{1}'; bstored := ARRAY[rstored];
                END IF;
                RETURN;
            END IF;
        END IF;
        held := coalesce(held, '{}');
        clock := NULL;
    END IF;
    LOOP
        IF look = 'wider' THEN
            EXIT WHEN NOT (cardinality(cands) >= size AND size < scan
                           AND cardinality(chosen) < want
                           AND (own > 0 OR cardinality(qs) > 1));
            size := scan;
            SELECT n.names INTO keys
            FROM conveyor_lease_lock_names(p, w, qs, size, skip || chosen, kinds, held) AS n;
            FOREACH k IN ARRAY coalesce(keys, '{}') LOOP
                IF pg_try_advisory_xact_lock(hashtextextended(k, 0)) THEN
                    held := held || k;
                END IF;
            END LOOP;
        ELSIF look = 'again' THEN
            rq := '{}'; rk := '{}'; bn := '{}'; bps := NULL;
            bscope := NULL; bkey := NULL; bworker := NULL; brate := NULL;
            btok := NULL; bat := NULL; btaken := NULL; bstored := NULL;
        END IF;
        -- A new statement, a new snapshot (`snap`): it sees every lease committed before
        -- it. The clock is read after that snapshot, so a lease starts after every end it
        -- saw (an end is its transaction's start, which precedes its commit).
        -- The candidates, with the running counts and buckets not read yet (those read in
        -- the first look carry its admissions, and their locks are still held), and the
        -- names of the locks the candidates need that are not held. Buckets are refilled
        -- to now; a changed rate starts full. The previous holder of a bucket's lock
        -- stored its own clock, committed before this snapshot: an earlier clock here
        -- would move refill_time back and hand out the tokens in between twice.
        WITH k AS (
            SELECT ARRAY(
                SELECT DISTINCT r.key FROM rate_limits r
                WHERE r.project = p AND r.scope = 'kind' AND r.worker IN ('', w)
            ) AS kinds
        ),
        x AS MATERIALIZED (
            SELECT x.* FROM k, conveyor_lease_candidates(p, qs, size, skip || chosen, k.kinds) x
        ),
        nm AS MATERIALIZED (
            SELECT array_agg(DISTINCT l.name COLLATE "C" ORDER BY l.name COLLATE "C") AS names
            FROM x, unnest(conveyor_lease_locks(
                p, w, x.queue, x.kind, x.concurrency_key, x.max_concurrency, x.rate_limit,
                (SELECT k.kinds FROM k)
            )) AS l (name)
            WHERE l.name IS NOT NULL AND l.name <> ALL (held)
        )
        SELECT ARRAY(SELECT (x.id, x.queue, x.kind, x.concurrency_key, x.concurrency_limit,
                             x.max_concurrency, x.rate_limit)::conveyor_lease_candidate
                     FROM x),
               clock_timestamp(),
               pg_current_snapshot()::text,
               (SELECT k.kinds FROM k),
               (SELECT nm.names FROM nm),
               -- The first look takes the locks it names, waiting, in the names' order (an
               -- array unnests in order): its reads precede them, which the snapshot
               -- check after this statement makes good.
               (SELECT count(pg_advisory_xact_lock(hashtextextended(l.name, 0)))
                FROM nm, unnest(nm.names) AS l (name)
                WHERE look = 'first' AND held = '{}'),
               rq || coalesce((
                   SELECT jsonb_object_agg(r.queue, r.n)
                   FROM (
                       SELECT t.queue, count(*) AS n
                       FROM tasks t
                       WHERE t.project = p AND t.state = 'RUNNING'
                         AND t.queue = ANY (ARRAY(
                             SELECT x.queue FROM x
                             WHERE x.max_concurrency > 0 AND NOT rq ? x.queue))
                         AND t.lease_id <> ALL (coalesce(freed, '{}'))
                       GROUP BY t.queue
                   ) AS r), '{}'),
               rk || coalesce((
                   SELECT jsonb_object_agg(r.key, r.n)
                   FROM (
                       SELECT t.concurrency_key AS key, count(*) AS n
                       FROM tasks t
                       WHERE t.project = p AND t.state = 'RUNNING'
                         AND t.concurrency_key = ANY (ARRAY(
                             SELECT x.concurrency_key FROM x
                             WHERE x.concurrency_key IS NOT NULL AND NOT rk ? x.concurrency_key))
                         AND t.lease_id <> ALL (coalesce(freed, '{}'))
                       GROUP BY t.concurrency_key
                   ) AS r), '{}'),
               bn || coalesce(array_agg(b.name), '{}'),
               bscope || coalesce(array_agg(b.scope), '{}'),
               bkey || coalesce(array_agg(b.key), '{}'),
               bworker || coalesce(array_agg(b.worker), '{}'),
               brate || coalesce(array_agg(b.rate), '{}'),
               bps || coalesce(array_agg(b.ps), '{}'),
               btok || coalesce(array_agg(
                   conveyor_bucket_tokens(b.rate, r.rate, r.tokens, r.refill_time, b.at)), '{}'),
               bat || coalesce(array_agg(b.at), '{}'),
               btaken || coalesce(array_agg(0), '{}'),
               bstored || coalesce(array_agg(r.project IS NOT NULL), '{}')
        -- (`i`: the count of locks taken, not used.)
        INTO cands, clock, snap, kinds, keys, i, rq, rk, bn, bscope, bkey, bworker, brate, bps,
             btok, bat, btaken, bstored
        FROM (
            SELECT v.*, conveyor_rate_per_second(v.rate) AS ps, clock_timestamp() AS at
            FROM (
                SELECT 'conveyor/rate/' || p || '/queue/' || q.id || '/' AS name,
                       'queue' AS scope, q.id AS key, '' AS worker, q.rate_limit AS rate
                FROM queues q
                WHERE q.project = p AND q.id = ANY (qs) AND q.rate_limit <> ''
                UNION ALL
                SELECT 'conveyor/rate/' || p || '/kind/' || r.key || '/' || r.worker,
                       'kind', r.key, r.worker, r.rate
                FROM rate_limits r
                WHERE (SELECT k.kinds FROM k) <> '{}' AND r.project = p AND r.scope = 'kind'
                  AND r.worker IN ('', w)
            ) AS v
            WHERE v.name <> ALL (bn)
        ) AS b
        LEFT JOIN rate_limits r
          ON r.project = p AND r.scope = b.scope AND r.key = b.key AND r.worker = b.worker;

        IF look = 'first' THEN
            IF cardinality(cands) = 0 THEN
                RETURN;
            END IF;
            IF held = '{}' THEN
                held := coalesce(keys, '{}');
            ELSE
                -- The head's locks are held: waiting for more out of order could deadlock.
                FOREACH k IN ARRAY coalesce(keys, '{}') LOOP
                    IF pg_try_advisory_xact_lock(hashtextextended(k, 0)) THEN
                        held := held || k;
                    END IF;
                END LOOP;
            END IF;
            -- What was read holds under the locks unless a transaction committed since:
            -- an expression sees a new snapshot, where such a commit shows.
            IF pg_current_snapshot()::text <> snap THEN
                look := 'again';
                CONTINUE;
            END IF;
        END IF;
        -- Only plain expressions from here on (no queries): this loop runs per candidate.
        FOREACH c IN ARRAY cands LOOP
            EXIT WHEN cardinality(chosen) >= want;
            IF (c.max_concurrency > 0 OR c.rate_limit <> '')
               AND ('conveyor/queue/' || p || '/' || c.queue) <> ALL (held) THEN
                CONTINUE;
            END IF;
            IF c.concurrency_key IS NOT NULL
               AND ('conveyor/key/' || p || '/' || c.concurrency_key) <> ALL (held) THEN
                own := own + 1;
                CONTINUE;
            END IF;
            IF c.max_concurrency > 0
               AND coalesce((rq ->> c.queue)::integer, 0) >= c.max_concurrency THEN
                CONTINUE;
            END IF;
            IF c.concurrency_key IS NOT NULL
               AND coalesce((rk ->> c.concurrency_key)::integer, 0)
                   >= greatest(1, c.concurrency_limit) THEN
                own := own + 1;
                CONTINUE;
            END IF;
            names := ARRAY[
                CASE WHEN c.rate_limit <> '' THEN 'conveyor/rate/' || p || '/queue/' || c.queue || '/' END,
                'conveyor/rate/' || p || '/kind/' || c.kind || '/',
                'conveyor/rate/' || p || '/kind/' || c.kind || '/' || w
            ];
            wait := NULL;
            unheld := false;
            kind_empty := false;
            FOREACH n IN ARRAY names LOOP
                -- NULL: no such limit; not in bn: the bucket went away, no limit.
                i := array_position(bn, n);
                CONTINUE WHEN i IS NULL;
                IF n <> ALL (held) THEN
                    unheld := true;
                ELSIF btok[i] < 1 THEN
                    wait := greatest(wait, (1 - btok[i]) / bps[i]);
                    kind_empty := kind_empty OR bscope[i] = 'kind';
                END IF;
            END LOOP;
            IF unheld THEN
                own := own + 1;
                CONTINUE;
            END IF;
            IF wait IS NOT NULL THEN
                rate_wait := least(rate_wait, wait);
                IF kind_empty THEN
                    own := own + 1;
                END IF;
                CONTINUE;
            END IF;
            FOREACH n IN ARRAY names LOOP
                i := array_position(bn, n);
                CONTINUE WHEN i IS NULL;
                btok[i] := btok[i] - 1;
                btaken[i] := btaken[i] + 1;
            END LOOP;
            chosen := chosen || c.id;
            -- The counts are for the candidates after it; the last one needs none.
            EXIT WHEN cardinality(chosen) >= want;
            rq := jsonb_set(rq, ARRAY[c.queue], to_jsonb(coalesce((rq ->> c.queue)::integer, 0) + 1));
            IF c.concurrency_key IS NOT NULL THEN
                rk := jsonb_set(rk, ARRAY[c.concurrency_key],
                                to_jsonb(coalesce((rk ->> c.concurrency_key)::integer, 0) + 1));
            END IF;
        END LOOP;
        EXIT WHEN look = 'wider';
        look := 'wider';
    END LOOP;
END
$$;
