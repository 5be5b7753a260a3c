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
-- already ended). No foreign key on depends_on: an edge outlives a dependency deleted
-- after it ended, as Task.depends_on keeps naming it.
CREATE TABLE task_dependencies (
    project text NOT NULL,
    task_id uuid NOT NULL,
    depends_on uuid NOT NULL,
    outcome text,
    PRIMARY KEY (project, task_id, depends_on),
    FOREIGN KEY (project, task_id) REFERENCES tasks (project, id) ON DELETE CASCADE,
    CONSTRAINT task_dependencies_outcome_valid CHECK (
        outcome IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED', 'DELETED'))
);

-- The dependents of a task that ends; the retention loop's "is it still needed".
CREATE INDEX task_dependencies_depends_on_idx ON task_dependencies (project, depends_on);

-- The promoter reads only tasks that wait for their time, not for dependencies.
DROP INDEX tasks_due_idx;
CREATE INDEX tasks_due_idx ON tasks (schedule_time)
    WHERE state = 'SCHEDULED' AND deps_remaining = 0;

-- Resolves the dependents of task `dep` of project `p`, which ended with `outcome` (its
-- terminal state, or DELETED), in the caller's transaction; returns how many changed
-- state. Each unresolved edge is resolved and its dependent's count goes down by one:
--   the last one to end releases a SCHEDULED dependent (QUEUED, task.queued, its
--   queue's workers woken) unless its schedule_time is still ahead (the promoter then
--   takes it);
--   one that did not succeed CANCELs a waiting dependent whose policy is CANCEL, its
--   state_reason and error naming the dependency (task.cancelled); RUN_ANYWAY counts it.
-- Concurrent ends of dependencies of one task (on any replica) lock that task's row, in
-- id order, before reading its count: each decrement sees the one before, so exactly
-- one of them sees the last and none misses it. Dependents cancelled here are resolved
-- in turn by this same loop, not by nested triggers, so a long chain cannot exhaust the
-- stack.
CREATE FUNCTION conveyor_resolve_dependents(p text, dep uuid, outcome text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ended uuid[] := ARRAY[dep];
    outcomes text[] := ARRAY[outcome];
    i integer := 1;
    waiting uuid[];
    more uuid[];
    reason text;
    moved integer;
    changed integer := 0;
BEGIN
    PERFORM set_config('conveyor.resolving', 'on', true);
    WHILE i <= cardinality(ended) LOOP
        WITH resolved AS (
            UPDATE task_dependencies e SET outcome = outcomes[i]
            WHERE e.project = p AND e.depends_on = ended[i] AND e.outcome IS NULL
            RETURNING e.task_id
        )
        SELECT array_agg(r.task_id ORDER BY r.task_id) INTO waiting FROM resolved r;
        IF waiting IS NOT NULL THEN
            PERFORM 1 FROM tasks t
            WHERE t.project = p AND t.id = ANY (waiting)
            ORDER BY t.id
            FOR NO KEY UPDATE;
            reason := 'dependency projects/' || p || '/tasks/' || ended[i] || ' ' || CASE outcomes[i]
                WHEN 'FAILED' THEN 'failed'
                WHEN 'CANCELLED' THEN 'was cancelled'
                WHEN 'INTERRUPTED' THEN 'was interrupted'
                ELSE 'was deleted' END;
            WITH decided AS (
                SELECT t.id, CASE
                    WHEN outcomes[i] <> 'SUCCEEDED' AND t.dependency_failure_policy = 'CANCEL'
                         AND t.state IN ('SCHEDULED', 'AWAITING_APPROVAL') THEN 'CANCELLED'
                    WHEN t.deps_remaining = 1 AND t.state = 'SCHEDULED'
                         AND t.schedule_time <= now() THEN 'QUEUED'
                END AS becomes
                FROM tasks t
                WHERE t.project = p AND t.id = ANY (waiting)
            ),
            changes AS (
                -- transitions: SCHEDULED -> QUEUED, SCHEDULED -> CANCELLED, AWAITING_APPROVAL -> CANCELLED
                UPDATE tasks t
                SET deps_remaining = greatest(t.deps_remaining - 1, 0),
                    state = coalesce(d.becomes, t.state),
                    state_reason = CASE d.becomes WHEN 'CANCELLED' THEN reason ELSE t.state_reason END,
                    error = CASE d.becomes WHEN 'CANCELLED' THEN jsonb_build_object(
                        'type', 'DEPENDENCY_FAILED', 'message', reason, 'retryable', false,
                        'details', jsonb_build_object(
                            'dependency', 'projects/' || p || '/tasks/' || ended[i],
                            'outcome', outcomes[i]))
                        ELSE t.error END,
                    end_time = CASE d.becomes WHEN 'CANCELLED' THEN now() ELSE t.end_time END,
                    update_time = CASE WHEN d.becomes IS NULL THEN t.update_time ELSE now() END
                FROM decided d
                WHERE t.project = p AND t.id = d.id
                RETURNING t AS task, d.becomes
            ),
            events_written AS (
                INSERT INTO events (project, type, subject, task, data)
                SELECT p, CASE c.becomes WHEN 'QUEUED' THEN 'task.queued' ELSE 'task.cancelled' END,
                       'projects/' || p || '/tasks/' || (c.task).id, conveyor_task_change(c.task),
                       jsonb_build_object(
                           'reason', CASE c.becomes WHEN 'QUEUED' THEN 'dependencies succeeded' ELSE reason END,
                           'dependency', 'projects/' || p || '/tasks/' || ended[i])
                FROM changes c
                WHERE c.becomes IS NOT NULL
            ),
            woken AS (
                SELECT count(pg_notify('conveyor_tasks', p || '/' || k.queue)) AS n
                FROM (SELECT DISTINCT (c.task).queue AS queue FROM changes c
                      WHERE c.becomes = 'QUEUED') AS k
            )
            SELECT array_agg((c.task).id ORDER BY (c.task).id)
                       FILTER (WHERE c.becomes = 'CANCELLED' AND (c.task).has_dependents),
                   count(*) FILTER (WHERE c.becomes IS NOT NULL) + 0 * (SELECT n FROM woken)
            INTO more, moved
            FROM changes c;
            changed := changed + moved;
            IF more IS NOT NULL THEN
                ended := ended || more;
                outcomes := outcomes || array_fill('CANCELLED'::text, ARRAY[cardinality(more)]);
            END IF;
        END IF;
        i := i + 1;
    END LOOP;
    PERFORM set_config('conveyor.resolving', '', true);
    RETURN changed;
END
$$;

-- A task that others depend on ended (or was deleted before it ended): resolve them in
-- this transaction. Inside conveyor_resolve_dependents (a dependent it cancels) the
-- running loop takes the task instead.
CREATE FUNCTION conveyor_dependency_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('conveyor.resolving', true), '') <> 'on' THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM conveyor_resolve_dependents(OLD.project, OLD.id, 'DELETED');
        ELSE
            PERFORM conveyor_resolve_dependents(NEW.project, NEW.id, NEW.state);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_dependency_ended AFTER UPDATE ON tasks
FOR EACH ROW
WHEN (NEW.has_dependents
      AND NEW.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED')
      AND OLD.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_dependency_ended();

-- Deleting a finished task changes nothing (its dependents were resolved as it ended).
CREATE TRIGGER tasks_dependency_deleted AFTER DELETE ON tasks
FOR EACH ROW
WHEN (OLD.has_dependents
      AND OLD.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED'))
EXECUTE FUNCTION conveyor_dependency_ended();
