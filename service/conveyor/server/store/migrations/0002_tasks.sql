-- 0002: the queue core: queues, tasks, attempts, the event log, and worker sessions.
-- Also: system keys live under the `default` project (so every key has a resource name),
-- and projects keep their previous webhook secret during a rotation.

ALTER TABLE api_keys DROP CONSTRAINT api_keys_system_has_no_project;
ALTER TABLE api_keys ALTER COLUMN project SET NOT NULL;

ALTER TABLE projects ADD COLUMN previous_webhook_secret text;
ALTER TABLE projects ADD COLUMN previous_secret_expire_time timestamptz;

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
-- The promoter: scheduled tasks by due time.
CREATE INDEX tasks_due_idx ON tasks (schedule_time) WHERE state = 'SCHEDULED';
-- The reaper: running tasks by lease expiry.
CREATE INDEX tasks_lease_expiry_idx ON tasks (lease_expire_time) WHERE state = 'RUNNING';
CREATE UNIQUE INDEX tasks_request_id_idx ON tasks (project, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX tasks_root_idx ON tasks (project, root_task);
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
