-- The Conveyor schema as the migrations leave it: the place to read the data model.
--
-- Written by hand and kept equal to applying migrations/*.sql in order (tables, columns,
-- defaults, constraints, indexes, functions, triggers, seeded rows):
-- tests/test_migrations.py builds a database each way and compares their catalogs.
-- When you add a migration, make the same change here; put added columns last, where
-- ALTER TABLE ... ADD COLUMN puts them. migrate.py's own bookkeeping table
-- (schema_migrations) is not part of the picture.

-- A tenant. Every other resource lives under one.
CREATE TABLE projects (
    id text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    callback_url text NOT NULL DEFAULT '',
    -- Signs webhook deliveries (HMAC) so receivers can check they came from us.
    webhook_secret text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    -- During a rotation the old secret stays valid until previous_secret_expire_time.
    previous_webhook_secret text,
    previous_secret_expire_time timestamptz,
    CONSTRAINT projects_id_format CHECK (id ~ '^[a-z0-9-]{1,63}$')
);

-- A bearer credential. Only a hash of the secret is kept.
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    -- NULL only for system keys, which act across projects (the bootstrap admin).
    -- System keys (the bootstrap admin) live under `default` and act across projects.
    project text NOT NULL REFERENCES projects (id),
    role text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    secret_hash bytea NOT NULL,
    system boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    last_used_time timestamptz,
    CONSTRAINT api_keys_role_valid CHECK (role IN ('viewer', 'worker', 'operator', 'admin'))
);

CREATE INDEX api_keys_project_idx ON api_keys (project);

-- Secrets every replica must share, created once by whichever replica gets there first.
CREATE TABLE server_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);

INSERT INTO projects (id, display_name, webhook_secret)
VALUES (
    'default',
    'Default project',
    replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '')
);

-- A queue is created on first use; its row holds settings, not tasks.
CREATE TABLE queues (
    project text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id text NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    pause_reason text NOT NULL DEFAULT '',
    max_concurrency integer NOT NULL DEFAULT 0,
    rate_limit text NOT NULL DEFAULT '',
    -- RetryPolicy as JSON: {"max_attempts", "backoff", "initial_backoff_ms", "max_backoff_ms"}.
    default_retry_policy jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, id),
    CONSTRAINT queues_max_concurrency_valid CHECK (max_concurrency >= 0)
);

-- One row per task. The state machine is enforced here too: state values, and the
-- columns each state requires (a RUNNING task has a lease; a terminal one an end_time).
CREATE TABLE tasks (
    project text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- UUIDv7: time-ordered, so id order is creation order (keyset pages, lease ties).
    id uuid NOT NULL,
    queue text NOT NULL,
    kind text NOT NULL,
    input jsonb,
    priority smallint NOT NULL DEFAULT 5,
    state text NOT NULL,
    state_reason text NOT NULL DEFAULT '',
    labels jsonb NOT NULL DEFAULT '{}',
    max_attempts integer NOT NULL DEFAULT 3,
    backoff text NOT NULL DEFAULT 'EXPONENTIAL_JITTER',
    initial_backoff_ms bigint NOT NULL DEFAULT 1000,
    max_backoff_ms bigint NOT NULL DEFAULT 3600000,
    attempt integer NOT NULL DEFAULT 0,
    schedule_time timestamptz NOT NULL DEFAULT now(),
    lease_duration_ms bigint NOT NULL DEFAULT 30000,
    concurrency_key text,
    concurrency_limit integer NOT NULL DEFAULT 1,
    requires_approval boolean NOT NULL DEFAULT false,
    -- How long it may wait in AWAITING_APPROVAL (NULL: forever) and what happens then.
    approval_timeout_ms bigint,
    approval_timeout_action text NOT NULL DEFAULT '',
    correlation_id text NOT NULL DEFAULT '',
    parent_task uuid,
    root_task uuid NOT NULL,
    callback_url text NOT NULL DEFAULT '',
    resume_token text NOT NULL DEFAULT '',
    result jsonb,
    summary text NOT NULL DEFAULT '',
    error jsonb,
    worker text NOT NULL DEFAULT '',
    lease_id uuid,
    lease_expire_time timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    schedule text NOT NULL DEFAULT '',
    -- CreateTask's request_id: a retried create returns the first result.
    request_id text,
    create_time timestamptz NOT NULL DEFAULT now(),
    start_time timestamptz,
    end_time timestamptz,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, id),
    CONSTRAINT tasks_state_valid CHECK (state IN (
        'SCHEDULED', 'QUEUED', 'AWAITING_APPROVAL', 'RUNNING',
        'SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')),
    CONSTRAINT tasks_priority_valid CHECK (priority BETWEEN 1 AND 9),
    CONSTRAINT tasks_backoff_valid CHECK (backoff IN ('EXPONENTIAL_JITTER', 'LINEAR', 'FIXED')),
    CONSTRAINT tasks_approval_action_valid CHECK (
        approval_timeout_action IN ('', 'APPROVE', 'REJECT')),
    CONSTRAINT tasks_attempts_valid CHECK (max_attempts >= 1 AND attempt >= 0),
    CONSTRAINT tasks_running_has_lease CHECK (
        state <> 'RUNNING' OR (lease_id IS NOT NULL AND lease_expire_time IS NOT NULL)),
    CONSTRAINT tasks_terminal_has_end CHECK (
        state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED') OR end_time IS NOT NULL)
);

-- The lease path: ready tasks of a queue in lease order.
CREATE INDEX tasks_ready_idx ON tasks (project, queue, priority, schedule_time, id)
    WHERE state = 'QUEUED';
-- The promoter: scheduled tasks by due time (tasks_due_idx) is created with the
-- dependency columns (0023), since it leaves out tasks that wait for dependencies.
-- The reaper: running tasks by lease expiry.
CREATE INDEX tasks_lease_expiry_idx ON tasks (lease_expire_time) WHERE state = 'RUNNING';
-- CreateTask's request_id: a retried create finds the first (task_get_by_request_id.sql).
CREATE UNIQUE INDEX tasks_request_id_idx ON tasks (project, request_id)
    WHERE request_id IS NOT NULL;
-- GetTaskTree (task_tree.sql) and ListTasks' root_task filter (task_list.sql).
CREATE INDEX tasks_root_idx ON tasks (project, root_task);
-- ListTasks by state in keyset order (task_list.sql), the statistics loop.
CREATE INDEX tasks_state_idx ON tasks (project, state, id);

-- The retry delay of every policy, in one place: FailTask and the lease reaper both call it.
-- `attempt` is the attempt that just ended (1 for the first); `rand` in [0, 1) draws the
-- jitter (callers pass random(); tests pass a fixed value).
CREATE FUNCTION conveyor_backoff_ms(
    backoff text, attempt integer, initial_ms bigint, max_ms bigint, rand double precision
) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE backoff
    WHEN 'FIXED' THEN least(initial_ms, max_ms)
    WHEN 'LINEAR' THEN least(initial_ms::numeric * greatest(attempt, 1), max_ms)::bigint
    -- EXPONENTIAL_JITTER, "full jitter": uniform over [0, min(max, initial * 2^(attempt-1))].
    ELSE floor(
        rand * (least(initial_ms * power(2::numeric, least(greatest(attempt, 1) - 1, 62)), max_ms) + 1)
    )::bigint
END;

-- One row per lease of a task.
CREATE TABLE task_attempts (
    project text NOT NULL,
    task_id uuid NOT NULL,
    attempt integer NOT NULL,
    worker text NOT NULL,
    lease_id uuid NOT NULL,
    start_time timestamptz NOT NULL DEFAULT now(),
    end_time timestamptz,
    -- NULL while it runs; else SUCCEEDED, FAILED, LEASE_EXPIRED or CANCELLED.
    outcome text,
    error jsonb,
    progress jsonb,
    PRIMARY KEY (project, task_id, attempt),
    FOREIGN KEY (project, task_id) REFERENCES tasks (project, id) ON DELETE CASCADE,
    CONSTRAINT task_attempts_outcome_valid CHECK (
        outcome IS NULL OR outcome IN ('SUCCEEDED', 'FAILED', 'LEASE_EXPIRED', 'CANCELLED'))
);

-- The project's event log, appended in the transaction of each change. `xid` lets
-- readers hand out cursors only below every in-flight writer (commit order).
CREATE TABLE events (
    project text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    type text NOT NULL,
    time timestamptz NOT NULL DEFAULT now(),
    subject text NOT NULL DEFAULT '',
    task jsonb,
    data jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (project, id)
);

CREATE INDEX events_time_idx ON events (time);

-- A worker as last seen. `session` is the Connect stream that holds it (NULL for unary
-- LeaseTasks callers); the reaper marks it disconnected when `last_seen_time` grows old.
CREATE TABLE workers (
    project text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id text NOT NULL,
    queues text[] NOT NULL DEFAULT '{}',
    capacity integer NOT NULL DEFAULT 0,
    labels jsonb NOT NULL DEFAULT '{}',
    sdk_version text NOT NULL DEFAULT '',
    connected boolean NOT NULL DEFAULT false,
    connect_time timestamptz NOT NULL DEFAULT now(),
    last_seen_time timestamptz NOT NULL DEFAULT now(),
    session uuid,
    PRIMARY KEY (project, id)
);

-- Schedules (0003). A run's primary key is the occurrence: exactly once per occurrence.
CREATE TABLE schedules (
    project text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id text NOT NULL,
    title text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    kind text NOT NULL,
    expression text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    -- TaskTemplate in proto JSON (field names as in the proto).
    task_template jsonb NOT NULL,
    state text NOT NULL DEFAULT 'ACTIVE',
    notes text NOT NULL DEFAULT '',
    created_by text NOT NULL DEFAULT '',
    overlap_policy text NOT NULL DEFAULT 'SKIP',
    catchup_window_ms bigint NOT NULL DEFAULT 0,
    jitter_ms bigint NOT NULL DEFAULT 0,
    dst_policy text NOT NULL DEFAULT 'RUN_ONCE',
    -- The next occurrence (nominal time, before jitter); NULL when there is none.
    next_run_time timestamptz,
    last_run_time timestamptz,
    snooze_until timestamptz,
    snooze_reason text NOT NULL DEFAULT '',
    run_count bigint NOT NULL DEFAULT 0,
    missed_count bigint NOT NULL DEFAULT 0,
    -- BUFFER_ONE: an occurrence that waits for the running task to end.
    buffered_time timestamptz,
    -- EVENT schedules: the last event id looked at.
    event_cursor bigint NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, id),
    CONSTRAINT schedules_kind_valid CHECK (kind IN ('CRON', 'RRULE', 'ONCE', 'EVENT')),
    CONSTRAINT schedules_state_valid CHECK (state IN ('ACTIVE', 'PAUSED', 'CANCELLED')),
    CONSTRAINT schedules_overlap_valid CHECK (
        overlap_policy IN ('SKIP', 'BUFFER_ONE', 'ALLOW_ALL', 'CANCEL_OTHER')),
    CONSTRAINT schedules_dst_valid CHECK (dst_policy IN ('SKIP', 'RUN_ONCE'))
);

CREATE INDEX schedules_due_idx ON schedules (next_run_time) WHERE state = 'ACTIVE';
CREATE INDEX schedules_event_idx ON schedules (project) WHERE state = 'ACTIVE' AND kind = 'EVENT';

CREATE TABLE schedule_runs (
    project text NOT NULL,
    schedule_id text NOT NULL,
    -- The occurrence: an RFC 3339 nominal time, or `event:<id>` for EVENT schedules.
    occurrence text NOT NULL,
    nominal_time timestamptz NOT NULL,
    fire_time timestamptz NOT NULL DEFAULT now(),
    task_id uuid,
    note text NOT NULL DEFAULT '',
    PRIMARY KEY (project, schedule_id, occurrence),
    FOREIGN KEY (project, schedule_id) REFERENCES schedules (project, id) ON DELETE CASCADE
);

CREATE INDEX schedule_runs_recent_idx ON schedule_runs (project, schedule_id, fire_time DESC);

-- Events and webhooks (0004): event ids that are cursors, NOTIFY for watchers, and
-- the webhook outbox.

-- An event id is (the writer's transaction id << 20) + its n-th event in that transaction.
-- A sequence would number events in insert order, and a transaction holding id 10 can
-- commit after one holding id 11: a watcher that passed 11 would never see 10. With the
-- transaction id in the high bits, every id below
-- (pg_snapshot_xmin(pg_current_snapshot()) << 20) belongs to a transaction that has ended:
-- that range is final, so a reader hands out ids below it in order and never skips one.
-- The counter lives in a transaction-local setting (SET LOCAL semantics), so it restarts
-- at 1 in every transaction; the CHECK proves the high bits are the row's own xid and
-- refuses a transaction's 1,048,576th event instead of letting it spill into the next xid.
CREATE FUNCTION conveyor_event_id() RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE
RETURN (pg_current_xact_id()::text::bigint << 20) + set_config(
    'conveyor.event_n',
    (coalesce(nullif(current_setting('conveyor.event_n', true), ''), '0')::bigint + 1)::text,
    true
)::bigint;

ALTER TABLE events ALTER COLUMN id DROP IDENTITY;
ALTER TABLE events ALTER COLUMN id SET DEFAULT conveyor_event_id();
ALTER TABLE events ADD CONSTRAINT events_id_has_xid CHECK (id >> 20 = xid::text::bigint);

-- Wakes every replica's watchers at commit. The payload is the project only (never the
-- event: NOTIFY payloads stop at 8000 bytes, and the table is the truth); PostgreSQL
-- folds identical payloads of one transaction into one notification.
CREATE FUNCTION conveyor_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('conveyor_events', project) FROM (SELECT DISTINCT project FROM appended) p;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
REFERENCING NEW TABLE AS appended
FOR EACH STATEMENT EXECUTE FUNCTION conveyor_events_notify();

-- The webhook outbox: one row per terminal transition of a task that has a target (its
-- callback_url, else its project's). Written by a trigger, so it commits or rolls back
-- with the transition whatever code made it. `task` is the row as the transition left it.
CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    task_id uuid NOT NULL,
    event_type text NOT NULL,
    url text NOT NULL,
    task jsonb NOT NULL,
    event_time timestamptz NOT NULL,
    -- PENDING until DELIVERED (a 2xx) or FAILED (attempts or time ran out).
    state text NOT NULL DEFAULT 'PENDING',
    attempt_count integer NOT NULL DEFAULT 0,
    -- Due time; while an attempt runs, the time another replica may take it over.
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    -- The JSON body, fixed by the first attempt so every attempt sends the same bytes.
    body text,
    last_status_code integer,
    last_error text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    finish_time timestamptz,
    CONSTRAINT webhook_deliveries_state_valid CHECK (state IN ('PENDING', 'DELIVERED', 'FAILED'))
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_time)
    WHERE state = 'PENDING';
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (finish_time)
    WHERE state <> 'PENDING';
CREATE INDEX webhook_deliveries_task_idx ON webhook_deliveries (project, task_id);

-- One row per attempt: what the receiver answered, or why there was no answer.
CREATE TABLE webhook_attempts (
    delivery uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    start_time timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    status_code integer,
    error text NOT NULL DEFAULT '',
    PRIMARY KEY (delivery, attempt)
);

CREATE FUNCTION conveyor_webhook_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (project, task_id, event_type, url, task, event_time)
    SELECT NEW.project, NEW.id, 'task.' || lower(NEW.state), target.url, to_jsonb(NEW),
           coalesce(NEW.end_time, now())
    FROM (
        SELECT coalesce(
            nullif(NEW.callback_url, ''),
            (SELECT callback_url FROM projects WHERE id = NEW.project),
            ''
        ) AS url
    ) target
    WHERE target.url <> '';
    IF FOUND THEN
        -- Wakes the webhook dispatchers (on their own channel, so the many event
        -- notifications that carry no webhook do not).
        PERFORM pg_notify('conveyor_webhooks', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_webhook_outbox AFTER UPDATE ON tasks
FOR EACH ROW
WHEN (NEW.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
      AND OLD.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_webhook_outbox();

CREATE TRIGGER tasks_webhook_outbox_insert AFTER INSERT ON tasks
FOR EACH ROW
WHEN (NEW.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_webhook_outbox();

-- Flow control (0005).
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

-- Commands (0006): operator commands in a signed, hash-chained audit log.

-- The head of each project's chain: the last sequence and its digest. An append takes
-- this row FOR UPDATE (an upsert), so appends of one project are serialised while
-- other projects append in parallel; the lock is held until the appending
-- transaction ends, so sequences are gap-free and each row chains onto the previous.
CREATE TABLE audit_heads (
    project text PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    sequence bigint NOT NULL DEFAULT 0,
    digest text NOT NULL DEFAULT ''
);

-- The chain itself: immutable once written (see commands_immutable). The command's id
-- is its sequence number: projects/{project}/commands/{sequence}.
-- digest = SHA-256(prev_digest || canonical bytes), signature = HMAC-SHA-256(server
-- key, digest); domain/audit.py defines the canonical bytes.
CREATE TABLE commands (
    project text NOT NULL REFERENCES projects (id),
    sequence bigint NOT NULL,
    verb text NOT NULL,
    target text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}',
    issued_by text NOT NULL,
    idempotency_key text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    prev_digest text NOT NULL,
    digest text NOT NULL,
    signature text NOT NULL,
    PRIMARY KEY (project, sequence),
    CONSTRAINT commands_sequence_valid CHECK (sequence >= 1)
);

-- The same idempotency key from the same principal names one command.
CREATE UNIQUE INDEX commands_idempotency_idx ON commands (project, issued_by, idempotency_key)
    WHERE idempotency_key <> '';
CREATE INDEX commands_create_time_idx ON commands (project, create_time);

-- Chained rows are never rewritten or removed, whoever the server's role is: the
-- trigger refuses UPDATE, DELETE and TRUNCATE. (Only a superuser can switch it off,
-- and VerifyAuditLog then still names the first row that was touched.)
CREATE FUNCTION conveyor_commands_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'commands are an append-only audit log: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER commands_immutable BEFORE UPDATE OR DELETE ON commands
FOR EACH ROW EXECUTE FUNCTION conveyor_commands_immutable();
CREATE TRIGGER commands_no_truncate BEFORE TRUNCATE ON commands
FOR EACH STATEMENT EXECUTE FUNCTION conveyor_commands_immutable();

-- How far each command has come: mutable, outside the digest. Status changes are made
-- by the system (a worker's acknowledgement, a timeout, a background job), not by a
-- principal, and each one appends a command.<status> event in its transaction, so the
-- event log keeps their history while the chain stays immutable.
CREATE TABLE command_states (
    project text NOT NULL,
    sequence bigint NOT NULL,
    status text NOT NULL,
    result jsonb NOT NULL DEFAULT '{}',
    -- google.rpc.Status as JSON {code, message} when FAILED or TIMED_OUT.
    error jsonb,
    -- Worker control: the addressed worker's id and when an unacknowledged command times out.
    worker text NOT NULL DEFAULT '',
    deadline timestamptz,
    dispatch_time timestamptz,
    finish_time timestamptz,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, sequence),
    FOREIGN KEY (project, sequence) REFERENCES commands (project, sequence) ON DELETE CASCADE,
    CONSTRAINT command_states_status_valid CHECK (
        status IN ('ISSUED', 'DISPATCHED', 'SUCCEEDED', 'FAILED', 'TIMED_OUT'))
);

CREATE INDEX command_states_open_worker_idx ON command_states (project, worker, sequence)
    WHERE worker <> '' AND status IN ('ISSUED', 'DISPATCHED');
CREATE INDEX command_states_deadline_idx ON command_states (deadline)
    WHERE status IN ('ISSUED', 'DISPATCHED') AND deadline IS NOT NULL;

-- 0007: human approval: who decided, how, and when (Task.approval); and the index the
-- approval-timeout loop scans.
ALTER TABLE tasks
    ADD COLUMN approver text NOT NULL DEFAULT '',
    ADD COLUMN approved boolean,
    ADD COLUMN approval_comment text NOT NULL DEFAULT '',
    ADD COLUMN decide_time timestamptz;

-- Approval timeouts (loops/approvals.py).
CREATE INDEX tasks_approval_due_idx ON tasks (create_time)
    WHERE state = 'AWAITING_APPROVAL' AND approval_timeout_ms IS NOT NULL;

-- 0008: dedupe keys. A key is held by one task until expire_time; claiming it is one
-- INSERT ... ON CONFLICT, which takes over an expired key atomically and leaves a live
-- one alone (race-safe, no read-then-write). Deleting the holder frees its key.
CREATE TABLE task_dedupe_keys (
    project text NOT NULL,
    key text NOT NULL,
    task_id uuid NOT NULL,
    expire_time timestamptz NOT NULL,
    PRIMARY KEY (project, key),
    FOREIGN KEY (project, task_id) REFERENCES tasks (project, id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);

CREATE INDEX task_dedupe_keys_task_idx ON task_dedupe_keys (project, task_id);

-- Lease admission (0009): the limited lease path as one function call inside the lease
-- statement (the limits and the names of their locks: migrations/0009_lease_admission.sql).
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

-- 0010: request ids (AIP-155) remember what they were sent with. A retried create with
-- the same request_id returns the first result; the same request_id with a different
-- request is ALREADY_EXISTS (REQUEST_ID_REUSED) instead of silently the first result.
-- The hash is SHA-256 (hex) of the request message without its request_id, serialized
-- deterministically, so REST and gRPC callers hash alike. Rows made before 0010 have no
-- hash and match any request.
ALTER TABLE tasks ADD COLUMN request_hash text;

-- The request_ids of the other creates (CreateSchedule, CreateProject, CreateApiKey,
-- PublishEvent): claimed in the transaction that creates the resource, so concurrent
-- retries wait for the first and then read what it made. `project` is the parent's
-- project (`""` for CreateProject, whose parent is the system).
CREATE TABLE request_ids (
    project text NOT NULL,
    method text NOT NULL,
    request_id text NOT NULL,
    request_hash text NOT NULL,
    resource text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, method, request_id)
);
-- The retention loop forgets request ids as it forgets events (request_id_prune.sql).
CREATE INDEX request_ids_create_time_idx ON request_ids (create_time);

-- Dashboard sign-ins: an API key exchanged for a session cookie. Like keys, only SHA-256
-- of the session's 256-bit secret is stored. Deleting the key ends its sessions; signing
-- out sets revoke_time (kept, so a replayed cookie is refused rather than unknown).
CREATE TABLE dashboard_sessions (
    id text PRIMARY KEY,
    key_id text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    revoke_time timestamptz
);

CREATE INDEX dashboard_sessions_key_id ON dashboard_sessions (key_id);

-- 0012: lean task events. A task event stores what the transition changed, not a
-- to_jsonb snapshot of the whole row: writing (and WAL-logging) the input, labels and
-- every fixed field again at each start and end was most of an event's cost. The
-- snapshot a watcher receives is assembled when the event is read
-- (conveyor_task_snapshot): the task's row now, with the event's change on top.
--
-- A task's fixed fields (queue, kind, labels, retry shape, ids, create_time, ...) never
-- change, so the row now shows them as they were. The input may change (REPLACE_INPUT,
-- RetryTask's override_input): each change bumps input_version, and an event carries
-- the input only where it set it. A replayed event whose input_version is not the
-- row's takes the input from the last event before it that carried one, so it shows
-- the task as it was. Events written before 0012 hold full snapshots and are shown as
-- they are.
ALTER TABLE tasks ADD COLUMN input_version integer NOT NULL DEFAULT 0;

-- What a transition changed (with the input when `with_input`): the event's `task`.
CREATE FUNCTION conveyor_task_change(t tasks, with_input boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN jsonb_build_object(
    'project', t.project, 'id', t.id, 'state', t.state, 'state_reason', t.state_reason,
    'priority', t.priority,
    'attempt', t.attempt, 'max_attempts', t.max_attempts, 'schedule_time', t.schedule_time,
    'worker', t.worker, 'lease_id', t.lease_id, 'lease_expire_time', t.lease_expire_time,
    'cancel_requested', t.cancel_requested, 'result', t.result, 'summary', t.summary,
    'error', t.error, 'resume_token', t.resume_token, 'schedule', t.schedule,
    'start_time', t.start_time, 'end_time', t.end_time, 'update_time', t.update_time,
    'approver', t.approver, 'approved', t.approved, 'approval_comment', t.approval_comment,
    'decide_time', t.decide_time, 'input_version', t.input_version
) || CASE WHEN with_input THEN jsonb_build_object('input', t.input) ELSE '{}'::jsonb END;

-- The snapshot of event `at` of task `t` whose change was `change`: the row now, its
-- input as of the event, and the change on top.
CREATE FUNCTION conveyor_task_snapshot(t tasks, change jsonb, at bigint) RETURNS jsonb
LANGUAGE sql STABLE
RETURN to_jsonb(t) || jsonb_build_object('input', CASE
    WHEN change ? 'input' THEN change -> 'input'
    WHEN (change ->> 'input_version')::integer = t.input_version THEN t.input
    ELSE (
        SELECT p.task -> 'input' FROM events p
        WHERE p.project = t.project AND p.id < at
          AND p.subject = 'projects/' || t.project || '/tasks/' || t.id AND p.task ? 'input'
        ORDER BY p.id DESC
        LIMIT 1
    )
END) || change;

-- Each index of tasks and its readers:
--   tasks_pkey (project, id)           every read and write by task name
--   tasks_ready_idx                    the lease statement (lease_report.sql), admission
--   tasks_due_idx                      the promoter (reaper_promote.sql, reaper_next_due.sql)
--   tasks_lease_expiry_idx             the lease reaper (reaper_expire.sql)
--   tasks_request_id_idx               CreateTask's request_id (unique; task_get_by_request_id.sql)
--   tasks_root_idx                     GetTaskTree (task_tree.sql), ListTasks root_task filter
--   tasks_state_idx                    ListTasks by state (task_list.sql), statistics
--   tasks_running_queue_idx            admission: running count per queue (0009)
--   tasks_running_key_idx              admission: running count per concurrency key (0009)
--   tasks_approval_due_idx             approval timeouts (loops/approvals.py)
-- Every one has a reader, so none is dropped.
-- 0019: what a running task shows and how long it may run.
--
-- progress / progress_time: the last progress a handler reported (heartbeats carry it;
-- task_attempts.progress keeps it per attempt) and when, so GetTask, ListTasks and
-- event snapshots show it without reading the attempts. progress_event_time is when
-- the last `task.progress` event was appended: events are coalesced to one per task
-- per second (lease_extend.sql), so a chatty handler cannot flood the log.
ALTER TABLE tasks ADD COLUMN progress jsonb;
ALTER TABLE tasks ADD COLUMN progress_time timestamptz;
ALTER TABLE tasks ADD COLUMN progress_event_time timestamptz;

-- execution_timeout_ms: how long one attempt may run (from its lease) before the server
-- ends it with reason EXECUTION_TIMEOUT, heartbeats or not. NULL runs without a limit.
-- A task's value is fixed at create: the request's, else its queue's default.
ALTER TABLE tasks ADD COLUMN execution_timeout_ms bigint;
ALTER TABLE queues ADD COLUMN execution_timeout_ms bigint;

-- 0018: the queue metrics' shared snapshot. One replica per interval runs the grouped
-- count over the live tasks (queue_metrics.sql) and stores the answer here; the other
-- replicas read this one row instead of counting again. UNLOGGED: it is a cache, rebuilt
-- within an interval after a crash, and not worth WAL or a standby's copy.
CREATE UNLOGGED TABLE queue_metrics_snapshot (
    id integer PRIMARY KEY CHECK (id = 1),
    take_time timestamptz NOT NULL,
    queues jsonb NOT NULL
);

-- 0020: who created a task (Task.creator): the calling API key's name, or the name of
-- the schedule that fired it. Empty for tasks created before 0020. ListTasks filters
-- on it (TaskFilter.creators); no index: it narrows a project's tasks like kinds do.
ALTER TABLE tasks ADD COLUMN creator text NOT NULL DEFAULT '';

-- 0021: retention of finished tasks (Queue.finished_task_ttl, loops/task_retention.py).
-- finished_task_ttl_ms: how long a queue's finished tasks are kept after end_time.
-- NULL: the server default (30 days); 0: kept forever.
ALTER TABLE queues ADD COLUMN finished_task_ttl_ms bigint;

-- The project's default for its queues that set none (Project.finished_task_ttl).
ALTER TABLE projects ADD COLUMN finished_task_ttl_ms bigint;

-- The retention loop walks finished tasks oldest first, so a pass reads only the
-- expired ones instead of every finished task.
CREATE INDEX tasks_finished_idx ON tasks (end_time)
    WHERE state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED');

-- 0022: task logs (#19 point 2): the lines a running attempt writes (the SDK's ctx.log,
-- and its handler's stdout and stderr when the worker captures them), appended with
-- conveyor_append_task_logs (fenced by the lease) and read by ListTaskLogs and
-- WatchTaskLogs.
--
-- Each attempt's log is bounded by its queue's max_log_bytes / max_log_lines (NULL or 0:
-- the server defaults, 1 MiB and 10,000 lines): past the bound the oldest lines are
-- dropped. The attempt keeps the counters, so an append neither counts nor sums its log:
-- log_seq is the last seq given out (seqs are 1, 2, ... gap-free), log_dropped how many
-- of the oldest lines were dropped (the first kept line is log_dropped + 1, and says so
-- as its dropped_count), log_bytes the size of the lines kept.
ALTER TABLE queues ADD COLUMN max_log_bytes bigint;
ALTER TABLE queues ADD COLUMN max_log_lines integer;
ALTER TABLE task_attempts ADD COLUMN log_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE task_attempts ADD COLUMN log_dropped bigint NOT NULL DEFAULT 0;
ALTER TABLE task_attempts ADD COLUMN log_bytes bigint NOT NULL DEFAULT 0;

-- Lines live and die with their attempt (and so with their task: task deletes, purges
-- and the retention loop cascade here in the statement that deletes the task). `size`
-- is what the line counts against max_log_bytes: its message and fields in bytes.
CREATE TABLE task_logs (
    project text NOT NULL,
    task_id uuid NOT NULL,
    attempt integer NOT NULL,
    seq bigint NOT NULL,
    time timestamptz NOT NULL DEFAULT now(),
    stream text NOT NULL DEFAULT 'LOG',
    level text NOT NULL DEFAULT 'INFO',
    message text NOT NULL,
    fields jsonb,
    size integer NOT NULL,
    PRIMARY KEY (project, task_id, attempt, seq),
    FOREIGN KEY (project, task_id, attempt)
        REFERENCES task_attempts (project, task_id, attempt) ON DELETE CASCADE,
    CONSTRAINT task_logs_stream_valid CHECK (stream IN ('LOG', 'STDOUT', 'STDERR')),
    CONSTRAINT task_logs_level_valid CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR'))
);

-- Appends lines (a jsonb array of {time, stream, level, message, fields, size}) to the
-- attempt that `lease` leased, then drops the oldest lines past the bound; returns the
-- attempt, the last seq and how many lines the bound has dropped, or no row when the
-- lease is not the task's current one (the caller tells stale from missing). The
-- attempt's row lock orders concurrent appends of one attempt.
CREATE FUNCTION conveyor_append_task_logs(
    p text, task uuid, lease uuid, lines jsonb, default_bytes bigint, default_lines bigint
) RETURNS TABLE (attempt integer, last_seq bigint, dropped bigint)
LANGUAGE plpgsql AS $$
DECLARE
    a integer;
    max_bytes bigint;
    max_lines bigint;
    n integer := jsonb_array_length(lines);
    added bigint;
    last bigint;
    gone bigint;
    kept_bytes bigint;
    line_cut bigint;
    cut bigint;
    cut_bytes bigint;
BEGIN
    SELECT t.attempt, coalesce(nullif(q.max_log_bytes, 0), default_bytes),
           coalesce(nullif(q.max_log_lines, 0), default_lines)
    INTO a, max_bytes, max_lines
    FROM tasks t
    LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue
    WHERE t.project = p AND t.id = task AND t.lease_id = lease AND t.state = 'RUNNING';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(sum((l ->> 'size')::bigint), 0) INTO added FROM jsonb_array_elements(lines) l;
    UPDATE task_attempts ta
    SET log_seq = ta.log_seq + n, log_bytes = ta.log_bytes + added
    WHERE ta.project = p AND ta.task_id = task AND ta.attempt = a
    RETURNING ta.log_seq, ta.log_dropped, ta.log_bytes INTO last, gone, kept_bytes;
    INSERT INTO task_logs (project, task_id, attempt, seq, time, stream, level, message, fields, size)
    SELECT p, task, a, last - n + l.ord,
           coalesce((l.v ->> 'time')::timestamptz, now()),
           coalesce(l.v ->> 'stream', 'LOG'), coalesce(l.v ->> 'level', 'INFO'),
           coalesce(l.v ->> 'message', ''), nullif(l.v -> 'fields', 'null'::jsonb),
           (l.v ->> 'size')::integer
    FROM jsonb_array_elements(lines) WITH ORDINALITY AS l (v, ord);
    IF last - gone > max_lines OR kept_bytes > max_bytes THEN
        -- The oldest lines go: every seq up to the first that leaves at most max_lines
        -- lines and max_bytes bytes. The running sum stops at that line (LIMIT 1), so
        -- this reads the lines it drops, not the whole log.
        line_cut := greatest(gone, last - max_lines);
        SELECT s.seq, s.total INTO cut, cut_bytes
        FROM (
            SELECT l.seq, sum(l.size) OVER (ORDER BY l.seq) AS total
            FROM task_logs l
            WHERE l.project = p AND l.task_id = task AND l.attempt = a
            ORDER BY l.seq
        ) s
        WHERE s.seq >= line_cut AND s.total >= kept_bytes - max_bytes
        ORDER BY s.seq
        LIMIT 1;
        DELETE FROM task_logs l
        WHERE l.project = p AND l.task_id = task AND l.attempt = a AND l.seq <= cut;
        UPDATE task_attempts ta
        SET log_dropped = cut, log_bytes = ta.log_bytes - cut_bytes
        WHERE ta.project = p AND ta.task_id = task AND ta.attempt = a;
        gone := cut;
    END IF;
    RETURN QUERY SELECT a, last, gone;
END
$$;
-- 0023: dependencies between tasks (Task.depends_on, dependency_failure_policy).
--
-- depends_on: the ids the create named, in its order (NULL: none); what GetTask shows.
-- dependency_failure_policy: 'CANCEL' or 'RUN_ANYWAY' (NULL when there are none).
-- deps_remaining: how many of them have not ended yet. A SCHEDULED task with
--   deps_remaining > 0 waits for them, not for its time: the promoter's index leaves it
--   out, and the transaction that ends its last dependency releases it. Nothing polls.
-- has_dependents: some task depends on this one, so its end resolves them. The triggers
--   below fire only for such rows: every other task's end costs nothing more.
ALTER TABLE tasks ADD COLUMN depends_on uuid[];
ALTER TABLE tasks ADD COLUMN dependency_failure_policy text;
ALTER TABLE tasks ADD COLUMN deps_remaining integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;
ALTER TABLE tasks ADD CONSTRAINT tasks_dependency_policy_valid CHECK (
    dependency_failure_policy IN ('CANCEL', 'RUN_ANYWAY'));
ALTER TABLE tasks ADD CONSTRAINT tasks_deps_remaining_valid CHECK (deps_remaining >= 0);

-- One row per (dependent, dependency). `outcome` is NULL until the dependency ends, then
-- how it ended (its state, or DELETED): each edge is resolved exactly once, by the
-- transaction that ends the dependency (or that creates the dependent, for one that had
-- already ended). `pending`: resolved but not yet counted into its dependent, true only
-- until that transaction commits (conveyor_count_dependencies). No foreign key on
-- depends_on: an edge outlives a dependency deleted after it ended, as Task.depends_on
-- keeps naming it.
CREATE TABLE task_dependencies (
    project text NOT NULL,
    task_id uuid NOT NULL,
    depends_on uuid NOT NULL,
    outcome text,
    pending boolean NOT NULL DEFAULT false,
    PRIMARY KEY (project, task_id, depends_on),
    FOREIGN KEY (project, task_id) REFERENCES tasks (project, id) ON DELETE CASCADE,
    CONSTRAINT task_dependencies_outcome_valid CHECK (
        outcome IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED', 'DELETED'))
);

-- The dependents of a task that ends; the retention loop's "is it still needed".
CREATE INDEX task_dependencies_depends_on_idx ON task_dependencies (project, depends_on);
-- The edges a transaction resolved: only in-flight ones, so finding them reads next to
-- nothing.
CREATE INDEX task_dependencies_pending_idx ON task_dependencies (project, task_id)
    WHERE pending;

-- The promoter reads only tasks that wait for their time, not for dependencies.
CREATE INDEX tasks_due_idx ON tasks (schedule_time)
    WHERE state = 'SCHEDULED' AND deps_remaining = 0;

-- Counts the pending edges (dependencies that ended in this transaction, or had ended
-- before a create named them) into their dependents, and returns how many
-- dependents changed state. Per dependent, by the dependencies it just saw end:
--   when the last one ends, a SCHEDULED dependent is released (QUEUED, task.queued, its
--   queue's workers woken) unless its schedule_time is still ahead (the promoter then
--   takes it);
--   one that did not succeed CANCELs a waiting dependent whose policy is CANCEL, its
--   state_reason and error naming that dependency (task.cancelled); RUN_ANYWAY counts it.
-- Exactly once across replicas: every dependent of the transaction is locked, all in one
-- (project, id) order, before its count is read (a new snapshot, after the lock), so
-- two transactions ending dependencies of the same tasks wait for each other instead of
-- deadlocking, each sees the other's decrement, and only the one that takes the count
-- to 0 releases. Dependents it cancels mark their own edges pending as they end; this
-- loop counts those next, so a long chain runs in a loop, not in nested triggers.
CREATE FUNCTION conveyor_count_dependencies() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ps text[];
    ts uuid[];
    ds uuid[];
    os text[];
    moved integer;
    changed integer := 0;
BEGIN
    PERFORM set_config('conveyor.resolving', 'on', true);
    LOOP
        PERFORM set_config('conveyor.dependencies', '', true);
        WITH counted AS (
            UPDATE task_dependencies e SET pending = false
            WHERE e.pending
            RETURNING e.project, e.task_id, e.depends_on, e.outcome
        )
        SELECT array_agg(c.project), array_agg(c.task_id), array_agg(c.depends_on),
               array_agg(c.outcome)
        INTO ps, ts, ds, os
        FROM counted c;
        EXIT WHEN ts IS NULL;
        PERFORM 1 FROM tasks t
        WHERE (t.project, t.id) IN (SELECT * FROM unnest(ps, ts))
        ORDER BY t.project, t.id
        FOR NO KEY UPDATE;
        WITH ended AS (
            SELECT u.p AS project, u.t AS task_id, count(*) AS n,
                   (array_agg(u.d ORDER BY u.d) FILTER (WHERE u.o <> 'SUCCEEDED'))[1] AS dep,
                   (array_agg(u.o ORDER BY u.d) FILTER (WHERE u.o <> 'SUCCEEDED'))[1] AS how
            FROM unnest(ps, ts, ds, os) AS u (p, t, d, o)
            GROUP BY u.p, u.t
        ),
        decided AS (
            SELECT t.project, t.id, e.n, e.dep, CASE
                    WHEN e.dep IS NOT NULL AND t.dependency_failure_policy = 'CANCEL'
                         AND t.state IN ('SCHEDULED', 'AWAITING_APPROVAL') THEN 'CANCELLED'
                    WHEN t.deps_remaining <= e.n AND t.state = 'SCHEDULED'
                         AND t.schedule_time <= now() THEN 'QUEUED'
                END AS becomes,
                'dependency projects/' || t.project || '/tasks/' || e.dep || ' ' || CASE e.how
                    WHEN 'FAILED' THEN 'failed'
                    WHEN 'CANCELLED' THEN 'was cancelled'
                    WHEN 'INTERRUPTED' THEN 'was interrupted'
                    ELSE 'was deleted' END AS reason,
                e.how
            FROM ended e
            JOIN tasks t ON t.project = e.project AND t.id = e.task_id
        ),
        changes AS (
            -- transitions: SCHEDULED -> QUEUED, SCHEDULED -> CANCELLED, AWAITING_APPROVAL -> CANCELLED
            UPDATE tasks t
            SET deps_remaining = greatest(t.deps_remaining - d.n, 0),
                state = coalesce(d.becomes, t.state),
                state_reason = CASE d.becomes WHEN 'CANCELLED' THEN d.reason ELSE t.state_reason END,
                error = CASE d.becomes WHEN 'CANCELLED' THEN jsonb_build_object(
                    'type', 'DEPENDENCY_FAILED', 'message', d.reason, 'retryable', false,
                    'details', jsonb_build_object(
                        'dependency', 'projects/' || t.project || '/tasks/' || d.dep,
                        'outcome', d.how))
                    ELSE t.error END,
                end_time = CASE d.becomes WHEN 'CANCELLED' THEN now() ELSE t.end_time END,
                update_time = CASE WHEN d.becomes IS NULL THEN t.update_time ELSE now() END
            FROM decided d
            WHERE t.project = d.project AND t.id = d.id
            RETURNING t AS task, d.becomes, d.reason, d.dep
        ),
        events_written AS (
            INSERT INTO events (project, type, subject, task, data)
            SELECT (c.task).project,
                   CASE c.becomes WHEN 'QUEUED' THEN 'task.queued' ELSE 'task.cancelled' END,
                   'projects/' || (c.task).project || '/tasks/' || (c.task).id,
                   conveyor_task_change(c.task),
                   CASE c.becomes
                       WHEN 'QUEUED' THEN jsonb_build_object('reason', 'dependencies ended')
                       ELSE jsonb_build_object(
                           'reason', c.reason,
                           'dependency', 'projects/' || (c.task).project || '/tasks/' || c.dep)
                   END
            FROM changes c
            WHERE c.becomes IS NOT NULL
        ),
        woken AS (
            SELECT count(pg_notify('conveyor_tasks', k.key)) AS n
            FROM (SELECT DISTINCT (c.task).project || '/' || (c.task).queue AS key
                  FROM changes c WHERE c.becomes = 'QUEUED') AS k
        )
        SELECT count(*) FILTER (WHERE c.becomes IS NOT NULL) + 0 * (SELECT n FROM woken)
        INTO moved
        FROM changes c;
        changed := changed + moved;
    END LOOP;
    PERFORM set_config('conveyor.resolving', '', true);
    RETURN changed;
END
$$;

-- A task that others depend on ended (or was deleted before it ended): its edges get
-- its outcome and are marked pending, for the commit to count (below). Only
-- edge rows of this task are written here, so concurrent ends cannot deadlock on them;
-- a create naming this task holds its row (FOR SHARE) until it commits, so the edges it
-- adds are seen here, or it sees this end. (AFTER, not BEFORE: a BEFORE row trigger
-- makes every update of tasks lock its row first, one more write per row.)
CREATE FUNCTION conveyor_dependency_ends() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE task_dependencies e SET outcome = 'DELETED', pending = true
        WHERE e.project = OLD.project AND e.depends_on = OLD.id AND e.outcome IS NULL;
    ELSE
        UPDATE task_dependencies e SET outcome = NEW.state, pending = true
        WHERE e.project = NEW.project AND e.depends_on = NEW.id AND e.outcome IS NULL;
    END IF;
    IF FOUND THEN
        PERFORM set_config('conveyor.dependencies', 'pending', true);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_dependency_ends AFTER UPDATE ON tasks
FOR EACH ROW
WHEN (NEW.has_dependents
      AND NEW.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
      AND OLD.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_dependency_ends();

-- Deleting a finished task changes nothing (its dependents were counted as it ended).
CREATE TRIGGER tasks_dependency_deleted AFTER DELETE ON tasks
FOR EACH ROW
WHEN (OLD.has_dependents
      AND OLD.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_dependency_ends();

-- At commit, once per transaction that ended such a task (deferred constraint triggers,
-- whose WHEN is evaluated as each row changes, so no other statement queues anything):
-- every dependent of the transaction is counted in one pass, in one lock order. The
-- first call counts all pending edges; the others find the flag cleared. Inside
-- conveyor_count_dependencies (a dependent it cancels) its own loop counts.
CREATE FUNCTION conveyor_dependencies_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('conveyor.dependencies', true) = 'pending'
       AND coalesce(current_setting('conveyor.resolving', true), '') <> 'on' THEN
        PERFORM conveyor_count_dependencies();
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER tasks_dependencies_ended AFTER UPDATE ON tasks
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (NEW.has_dependents
      AND NEW.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
      AND OLD.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_dependencies_ended();

CREATE CONSTRAINT TRIGGER tasks_dependencies_deleted AFTER DELETE ON tasks
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
WHEN (OLD.has_dependents
      AND OLD.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_dependencies_ended();

-- 0024: request limits per API key (RateLimits; domain/request_limits.py).
-- A key's own limits by method class, and its project's default for the classes a key
-- leaves unset: the JSON form of conveyor.v1.RateLimits, e.g.
-- {"read": {"requests_per_second": 50, "burst": 100}}. '{}' sets none (unlimited).
ALTER TABLE api_keys ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}';

-- The live server processes (replicas), so each enforces its share of a deployment-wide
-- budget. Each beats every few seconds (loops/replicas.py) and deletes its row when it
-- stops; a row that stopped beating (a crashed replica) is pruned by the others.
-- UNLOGGED: liveness, rebuilt within one beat after a crash.
CREATE UNLOGGED TABLE replicas (
    id text PRIMARY KEY,
    start_time timestamptz NOT NULL DEFAULT now(),
    heartbeat_time timestamptz NOT NULL DEFAULT now()
);

-- 0025: redaction of task input (#21 point 3, domain/redaction.py). redact_paths lists
-- JSON Pointers or bare keys whose values keys below operator read as "<redacted>"; a
-- queue's add to its project's. webhook_full_input: whether webhook payloads carry
-- the stored input (false: redacted as for a viewer).
ALTER TABLE projects ADD COLUMN redact_paths text[] NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN webhook_full_input boolean NOT NULL DEFAULT false;
ALTER TABLE queues ADD COLUMN redact_paths text[] NOT NULL DEFAULT '{}';

-- 0026: the trace context of the request that created a task (a W3C traceparent, from
-- the caller's metadata or the server's own span), handed to the worker with each
-- lease so its handler's span continues the producer's trace. NULL: none was given.
-- Read only with the task: no index.
ALTER TABLE tasks ADD COLUMN traceparent text;

-- 0030: the change of a task.created event without building the task's row.
-- conveyor_task_change(ROW(inserted.*)::tasks, true) forms the whole 60-column row of
-- each new task and converts every field to JSON; a new task's mutable fields all hold
-- their column defaults, so only the fields an insert sets are converted and the rest
-- is one constant (~10 us of database CPU per task in a BatchCreateTasks of 1000).
-- tests/test_tasks_create.py checks that it equals conveyor_task_change for new tasks.
CREATE FUNCTION conveyor_task_created(
    project text, id uuid, state text, priority smallint, max_attempts integer,
    schedule_time timestamptz, resume_token text, schedule text, update_time timestamptz,
    input jsonb
) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN jsonb_build_object(
    'project', project, 'id', id, 'state', state, 'priority', priority,
    'max_attempts', max_attempts, 'schedule_time', schedule_time,
    'resume_token', resume_token, 'schedule', schedule, 'update_time', update_time,
    'input', input
) || '{"state_reason": "", "attempt": 0, "worker": "", "lease_id": null,
      "lease_expire_time": null, "cancel_requested": false, "result": null, "summary": "",
      "error": null, "start_time": null, "end_time": null, "approver": "", "approved": null,
      "approval_comment": "", "decide_time": null, "input_version": 0}'::jsonb;

-- 0031: conveyor_task_change is STABLE, as what it calls is: jsonb_build_object is
-- STABLE (a timestamptz turns into text by the session's TimeZone). Declared IMMUTABLE,
-- PostgreSQL could not inline it, and ran it as a SQL function per event row (its own
-- executor start each call; 22% of the settle statement's backend samples in perf).
-- Inlined, each event's change is built straight from the row's columns:
-- about -7 us of database CPU per task completed and leased (settle loop of 100 + 100).
ALTER FUNCTION conveyor_task_change(tasks, boolean) STABLE;

-- 0033: cheaper task log appends (#19 point 2: a task logging 1,000 lines a second must
-- not slow the lease path).
--
-- task_logs loses its foreign key to task_attempts: its check ran once per inserted
-- line (a trigger and a FOR KEY SHARE lookup of the attempt each), about 40% of an
-- append's database time, to prove what the append function already knows: it inserts
-- only after updating that attempt's row, which it then holds locked until commit. What
-- the key did on delete, a trigger does: an attempt's lines go with it, so with its task
-- (task deletes, purges and the retention loop delete the task; the attempts cascade).
ALTER TABLE task_logs DROP CONSTRAINT task_logs_project_task_id_attempt_fkey;

CREATE FUNCTION conveyor_task_attempt_logs_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_logs l
    WHERE l.project = OLD.project AND l.task_id = OLD.task_id AND l.attempt = OLD.attempt;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_attempts_logs_delete AFTER DELETE ON task_attempts
FOR EACH ROW EXECUTE FUNCTION conveyor_task_attempt_logs_delete();

-- The append as in 0022, with the bound cheaper: past the line bound alone (the usual
-- case: the bytes bound is far), the lines to drop are known by seq and go in one
-- ranged delete that sums their sizes; the running sum over sizes is needed only when
-- the bytes bound is crossed. Both read from the first kept line (seq > log_dropped), so
-- the index entries of lines dropped earlier and not yet vacuumed are not walked again.
-- An attempt deleted (with its task) between the lease check and its update appends
-- nothing, as for a stale lease.
CREATE OR REPLACE FUNCTION conveyor_append_task_logs(
    p text, task uuid, lease uuid, lines jsonb, default_bytes bigint, default_lines bigint
) RETURNS TABLE (attempt integer, last_seq bigint, dropped bigint)
LANGUAGE plpgsql AS $$
DECLARE
    a integer;
    max_bytes bigint;
    max_lines bigint;
    n integer := jsonb_array_length(lines);
    added bigint;
    last bigint;
    gone bigint;
    kept_bytes bigint;
    cut bigint;
    cut_bytes bigint;
BEGIN
    SELECT t.attempt, coalesce(nullif(q.max_log_bytes, 0), default_bytes),
           coalesce(nullif(q.max_log_lines, 0), default_lines)
    INTO a, max_bytes, max_lines
    FROM tasks t
    LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue
    WHERE t.project = p AND t.id = task AND t.lease_id = lease AND t.state = 'RUNNING';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(sum((l ->> 'size')::bigint), 0) INTO added FROM jsonb_array_elements(lines) l;
    UPDATE task_attempts ta
    SET log_seq = ta.log_seq + n, log_bytes = ta.log_bytes + added
    WHERE ta.project = p AND ta.task_id = task AND ta.attempt = a
    RETURNING ta.log_seq, ta.log_dropped, ta.log_bytes INTO last, gone, kept_bytes;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO task_logs (project, task_id, attempt, seq, time, stream, level, message, fields, size)
    SELECT p, task, a, last - n + l.ord,
           coalesce((l.v ->> 'time')::timestamptz, now()),
           coalesce(l.v ->> 'stream', 'LOG'), coalesce(l.v ->> 'level', 'INFO'),
           coalesce(l.v ->> 'message', ''), nullif(l.v -> 'fields', 'null'::jsonb),
           (l.v ->> 'size')::integer
    FROM jsonb_array_elements(lines) WITH ORDINALITY AS l (v, ord);
    IF kept_bytes > max_bytes THEN
        -- The oldest lines go: every seq up to the first that leaves at most max_lines
        -- lines and max_bytes bytes. The running sum stops at that line (LIMIT 1), so
        -- this reads the lines it drops, not the whole log.
        SELECT s.seq, s.total INTO cut, cut_bytes
        FROM (
            SELECT l.seq, sum(l.size) OVER (ORDER BY l.seq) AS total
            FROM task_logs l
            WHERE l.project = p AND l.task_id = task AND l.attempt = a AND l.seq > gone
            ORDER BY l.seq
        ) s
        WHERE s.seq >= last - max_lines AND s.total >= kept_bytes - max_bytes
        ORDER BY s.seq
        LIMIT 1;
        DELETE FROM task_logs l
        WHERE l.project = p AND l.task_id = task AND l.attempt = a
          AND l.seq > gone AND l.seq <= cut;
    ELSIF last - gone > max_lines THEN
        cut := last - max_lines;
        WITH d AS (
            DELETE FROM task_logs l
            WHERE l.project = p AND l.task_id = task AND l.attempt = a
              AND l.seq > gone AND l.seq <= cut
            RETURNING l.size
        )
        SELECT coalesce(sum(d.size), 0) INTO cut_bytes FROM d;
    ELSE
        RETURN QUERY SELECT a, last, gone;
        RETURN;
    END IF;
    UPDATE task_attempts ta
    SET log_dropped = cut, log_bytes = ta.log_bytes - cut_bytes
    WHERE ta.project = p AND ta.task_id = task AND ta.attempt = a;
    RETURN QUERY SELECT a, last, cut;
END
$$;

-- 0036: conveyor_task_created (0030) is STABLE for the reason 0031 gives for
-- conveyor_task_change: jsonb_build_object over a timestamptz depends on the session's
-- TimeZone, so IMMUTABLE was wrong, and it kept PostgreSQL from inlining the function
-- into the insert statement (one SQL function call per task.created event row).
ALTER FUNCTION conveyor_task_created(
    text, uuid, text, smallint, integer, timestamptz, text, text, timestamptz, jsonb
) STABLE;

-- 0037: the ready scan of the lease statement (lease_report.sql) and the admission's
-- candidates (conveyor_lease_candidates, 0009) read tasks_ready_idx in lease order and
-- stop at `size`, whatever the statistics say. Planned with the table's statistics from
-- before a burst (a queue filled with thousands of tasks since the last ANALYZE), each
-- estimated one ready row, and the cheapest-looking plan then read every QUEUED task of
-- the project from tasks_state_idx and sorted them all (21,600 rows and ~12 ms per
-- lease in the bench) until the statistics loop caught up. With sorting disabled inside
-- the function, tasks_ready_idx is the only way left to get the lease order, however few
-- rows the planner expects. (A SET clause keeps a function from being inlined: each is
-- one call per statement.)

-- The unlimited ready tasks of queue `q` for worker `w` (see lease_report.sql,
-- ready_one_queue), locked, in lease order. VOLATILE, as it locks: it reads in a
-- snapshot of its own, and the lease statement leases only those its own snapshot sees
-- (a task committed between the two is left QUEUED, unlocked at the statement's end).
CREATE FUNCTION conveyor_ready_tasks(p text, q text, w text, size integer) RETURNS SETOF uuid
LANGUAGE sql VOLATILE
SET enable_sort = off
AS $$
    SELECT t.id
    FROM tasks t
    WHERE t.project = p AND t.state = 'QUEUED' AND t.queue = q
      AND t.concurrency_key IS NULL
      AND coalesce(t.kind <> ALL ((SELECT conveyor_rate_kinds(p, w))::text[]), true)
      AND q <> ALL ((SELECT conveyor_closed_queues(p, true))::text[])
    ORDER BY t.priority, t.schedule_time, t.id
    LIMIT size
    FOR UPDATE OF t SKIP LOCKED
$$;

ALTER FUNCTION conveyor_lease_candidates(text, text[], integer, uuid[], text[])
    SET enable_sort = off;

-- 0039: the foreign keys of the hot path checked once per statement, not once per row.
--
-- events -> projects, tasks -> projects and task_attempts -> tasks each ran an RI query
-- per inserted row (a queued trigger, an SPI call and a FOR KEY SHARE lock each): three
-- event rows and one task row per task on projects, one attempt per lease on tasks.
-- Measured (backend CPU, load 5-7): inserting 100 events 10.0 -> 5.9 us per row, 100
-- tasks 21.0 -> 17.9 us per row. The RI queries' generic plans were also made once per
-- connection: planned while tasks was empty, the attempt check scanned every task (145
-- us per lease at 3,300 tasks) until the next ANALYZE. The same guarantees, by triggers:
--   - an event or a task names a project that exists: a statement-level trigger locks
--     each project the statement wrote rows of (FOR KEY SHARE, as the key did, so a
--     concurrent project delete waits for it or it fails) and raises the key's error,
--     by the key's name (store/wrap.py maps it to NotFound);
--   - deleting a project deletes its tasks and events (below, after the keys' own
--     cascades, which run first by trigger name), and a task's attempts go with it.
-- An attempt is only inserted by the lease statement (lease_report.sql), for a task
-- that statement has just updated and holds locked until commit: its existence needs
-- no check, only the delete does.

ALTER TABLE events DROP CONSTRAINT events_project_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_project_fkey;
ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_project_task_id_fkey;

-- Wakes every replica's watchers at commit (as in 0004), and checks the events'
-- projects as the key did: each project of the statement is locked FOR KEY SHARE (a
-- project being deleted makes this wait, then fail) and notified, in one query.
CREATE OR REPLACE FUNCTION conveyor_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    SELECT min(a.project) FILTER (WHERE l.id IS NULL) INTO missing
    FROM (SELECT DISTINCT project FROM appended) a
    LEFT JOIN LATERAL (
        SELECT p.id, pg_notify('conveyor_events', p.id)
        FROM projects p WHERE p.id = a.project
        FOR KEY SHARE
    ) l ON true;
    IF missing IS NOT NULL THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert or update on table "events" violates foreign key constraint "events_project_fkey"',
            DETAIL = format('Key (project)=(%s) is not present in table "projects".', missing),
            CONSTRAINT = 'events_project_fkey', TABLE = 'events';
    END IF;
    RETURN NULL;
END
$$;

-- The same check for new tasks. A statement-level AFTER trigger, as the key's checks
-- ran after the statement's rows.
CREATE FUNCTION conveyor_tasks_project_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    SELECT min(a.project) FILTER (WHERE l.id IS NULL) INTO missing
    FROM (SELECT DISTINCT project FROM inserted) a
    LEFT JOIN LATERAL (
        SELECT p.id FROM projects p WHERE p.id = a.project FOR KEY SHARE
    ) l ON true;
    IF missing IS NOT NULL THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert or update on table "tasks" violates foreign key constraint "tasks_project_fkey"',
            DETAIL = format('Key (project)=(%s) is not present in table "projects".', missing),
            CONSTRAINT = 'tasks_project_fkey', TABLE = 'tasks';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_project_check AFTER INSERT ON tasks
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION conveyor_tasks_project_check();

-- A row moved to another project (no code does it): that project must exist, as the
-- keys had it.
CREATE FUNCTION conveyor_project_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM projects p WHERE p.id = NEW.project FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format(
                'insert or update on table "%s" violates foreign key constraint "%s_project_fkey"',
                TG_TABLE_NAME, TG_TABLE_NAME),
            DETAIL = format('Key (project)=(%s) is not present in table "projects".', NEW.project),
            CONSTRAINT = TG_TABLE_NAME || '_project_fkey', TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_project_moved AFTER UPDATE OF project ON tasks
FOR EACH ROW WHEN (OLD.project IS DISTINCT FROM NEW.project)
EXECUTE FUNCTION conveyor_project_moved();

CREATE TRIGGER events_project_moved AFTER UPDATE OF project ON events
FOR EACH ROW WHEN (OLD.project IS DISTINCT FROM NEW.project)
EXECUTE FUNCTION conveyor_project_moved();

-- ON DELETE CASCADE of the two keys to projects. Named to fire after the other keys'
-- cascades (RI_ConstraintTrigger_* sort first). A project's id never changes (the keys
-- refused it while rows named it; so does this).
CREATE FUNCTION conveyor_project_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF EXISTS (SELECT FROM tasks WHERE project = OLD.id)
           OR EXISTS (SELECT FROM events WHERE project = OLD.id) THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('project %s has tasks or events: its id cannot change', OLD.id),
                CONSTRAINT = 'tasks_project_fkey', TABLE = 'projects';
        END IF;
        RETURN NULL;
    END IF;
    DELETE FROM tasks WHERE project = OLD.id;
    DELETE FROM events WHERE project = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER projects_rows_delete AFTER DELETE ON projects
FOR EACH ROW EXECUTE FUNCTION conveyor_project_rows();

CREATE TRIGGER projects_rows_id AFTER UPDATE OF id ON projects
FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
EXECUTE FUNCTION conveyor_project_rows();

-- ON DELETE CASCADE of task_attempts -> tasks: a task's attempts go with it (and their
-- log lines with them, 0033).
CREATE FUNCTION conveyor_task_attempts_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_attempts a WHERE a.project = OLD.project AND a.task_id = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_attempts_delete AFTER DELETE ON tasks
FOR EACH ROW EXECUTE FUNCTION conveyor_task_attempts_delete();

-- 0040: the webhook outbox trigger (0004) inserts only when there is a target. It ran,
-- for every task that ended, an INSERT ... SELECT whose SELECT found no target when
-- neither the task nor its project has a callback_url (the usual case): an INSERT's
-- executor started and ended on webhook_deliveries for no row. Now the target is read
-- first (the project's row only when the task has no callback_url of its own) and the
-- INSERT runs only for a delivery. Same rows, same wake-up. Measured (backend CPU,
-- load 6-7): ending 100 running tasks in one UPDATE, no webhook anywhere, 28.4 -> 23.4
-- us per task (19.5 without the trigger).
CREATE OR REPLACE FUNCTION conveyor_webhook_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    target text := NEW.callback_url;
BEGIN
    IF target = '' THEN
        SELECT p.callback_url INTO target FROM projects p WHERE p.id = NEW.project;
        IF coalesce(target, '') = '' THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO webhook_deliveries (project, task_id, event_type, url, task, event_time)
    VALUES (NEW.project, NEW.id, 'task.' || lower(NEW.state), target, to_jsonb(NEW),
            coalesce(NEW.end_time, now()));
    -- Wakes the webhook dispatchers (on their own channel, so the many event
    -- notifications that carry no webhook do not).
    PERFORM pg_notify('conveyor_webhooks', '');
    RETURN NULL;
END
$$;

-- 0041: conveyor_task_change builds a change from a composite row.
-- conveyor_task_change (0012, 0031) built each event's change with jsonb_build_object
-- over 26 key/value pairs: each key and each value converted on its own, ~0.3 us per
-- pair, ~7.4 us per event row (load 7). to_jsonb of a row of this composite type
-- builds the same object (the same values and JSON types, the same canonical key order,
-- NULLs as JSON null) from the fields alone: ~5.7 us per event row, measured alike. The
-- settle statement writes two such events per task (its end and the next start). Still
-- STABLE and a single expression, so inlined into each statement as before.
CREATE TYPE conveyor_task_change_fields AS (
    project text,
    id uuid,
    state text,
    state_reason text,
    priority smallint,
    attempt integer,
    max_attempts integer,
    schedule_time timestamptz,
    worker text,
    lease_id uuid,
    lease_expire_time timestamptz,
    cancel_requested boolean,
    result jsonb,
    summary text,
    error jsonb,
    resume_token text,
    schedule text,
    start_time timestamptz,
    end_time timestamptz,
    update_time timestamptz,
    approver text,
    approved boolean,
    approval_comment text,
    decide_time timestamptz,
    input_version integer
);

CREATE OR REPLACE FUNCTION conveyor_task_change(t tasks, with_input boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN to_jsonb(ROW(
    t.project, t.id, t.state, t.state_reason, t.priority, t.attempt, t.max_attempts,
    t.schedule_time, t.worker, t.lease_id, t.lease_expire_time, t.cancel_requested,
    t.result, t.summary, t.error, t.resume_token, t.schedule, t.start_time, t.end_time,
    t.update_time, t.approver, t.approved, t.approval_comment, t.decide_time, t.input_version
)::conveyor_task_change_fields)
|| CASE WHEN with_input THEN jsonb_build_object('input', t.input) ELSE '{}'::jsonb END;

-- 0042: a lease where no limit can apply runs without the admission block.
--
-- The lease statement (lease_report.sql) started its admission block at every lease,
-- even when the unlimited part filled the take or nothing limited waited: conveyor_admit,
-- the probe, the bucket writes and ~20 plan nodes, ~80 us of database CPU per lease
-- (load 5). store/leases.py now composes the lease without it (admit_check) unless it
-- saw limits on those queues lately; this function, called once by that statement,
-- raises conveyor_admit_needed (SQLSTATE CV001) when the full statement would have
-- called conveyor_admit: the unlimited part left room and a queue has limits or the
-- probe finds a limited candidate. The statement is then rolled back whole (nothing
-- it did, no NOTIFY, survives) and the full statement runs, so what is leased never
-- depends on what the server guessed. plpgsql, so the probe runs only when there is room.
CREATE FUNCTION conveyor_admit_check(p text, w text, qs text[], want integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF want > 0 THEN
        IF qs && conveyor_limited_queues(p) OR EXISTS (
            SELECT FROM conveyor_lease_candidates(p, qs, 1, NULL, conveyor_rate_kinds(p, w))
        ) THEN
            RAISE EXCEPTION 'conveyor_admit_needed' USING ERRCODE = 'CV001';
        END IF;
    END IF;
    RETURN true;
END;
$$;
