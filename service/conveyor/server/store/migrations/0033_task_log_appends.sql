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
