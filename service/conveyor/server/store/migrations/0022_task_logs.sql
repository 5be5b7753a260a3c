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
