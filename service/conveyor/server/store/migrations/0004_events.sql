-- 0004: event ids that are cursors, NOTIFY for watchers, and the webhook outbox.

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
