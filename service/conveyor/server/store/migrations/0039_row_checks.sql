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
