-- The final events after a cursor, oldest first, and the bound they were read below.
--
-- An event id is (xid << 20) + n (see 0004_events.sql), so every id below
-- `bound` = (pg_snapshot_xmin(pg_current_snapshot()) << 20) was written by a transaction
-- that has ended: no smaller id can appear later, and a reader that has read everything
-- below `bound` may move its cursor to bound - 1 even past the last row it saw.
-- `held` says committed events wait at or above the bound (an older writer is still
-- running), so the caller looks again soon instead of at its next poll.
-- Always one row at least: with no events, the event columns are NULL.
-- A task event stores what its transition changed (0012); the snapshot is assembled
-- here from the task's row and that change (conveyor_task_snapshot). Events written
-- before 0012 hold a full snapshot (it has `kind`) and are sent as they are, and so is
-- the change of a task deleted since.
WITH horizon AS (
    SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) AS bound
)
SELECT
    h.bound,
    EXISTS (
        SELECT 1 FROM events WHERE project = %(project)s AND id >= h.bound
    ) AS held,
    e.id, e.type, e.time, e.subject,
    CASE
        WHEN e.task IS NULL OR e.task ? 'kind' THEN e.task
        ELSE coalesce(
            (SELECT conveyor_task_snapshot(t, e.task, e.id) FROM tasks t
             WHERE t.project = %(project)s AND t.id = (e.task ->> 'id')::uuid),
            e.task)
    END::text AS task,
    e.data::text AS data
FROM horizon h
LEFT JOIN LATERAL (
    SELECT id, type, time, subject, task, data
    FROM events
    WHERE project = %(project)s AND id > %(after)s AND id < h.bound
    ORDER BY id
    LIMIT %(limit)s
) e ON true
ORDER BY e.id
