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
