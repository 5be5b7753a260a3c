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
DROP INDEX tasks_due_idx;
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
