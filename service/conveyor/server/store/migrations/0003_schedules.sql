-- 0003: schedules and their runs. A run's primary key is the occurrence, so any number
-- of replicas firing the same occurrence create its task exactly once.

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
