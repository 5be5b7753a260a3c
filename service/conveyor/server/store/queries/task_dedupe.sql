-- name: claim
-- Takes the key for a new task: a free or expired key is claimed (a row comes back),
-- a live one is left to its holder (no row).
INSERT INTO task_dedupe_keys (project, key, task_id, expire_time)
VALUES (%(project)s, %(key)s, %(task_id)s, now() + %(window_ms)s::double precision * interval '1 millisecond')
ON CONFLICT (project, key) DO UPDATE
SET task_id = EXCLUDED.task_id, expire_time = EXCLUDED.expire_time
WHERE task_dedupe_keys.expire_time <= now()
RETURNING task_id

-- name: holder
-- The task holding a live key, locked until the transaction ends.
SELECT t.*
FROM task_dedupe_keys k
JOIN tasks t ON t.project = k.project AND t.id = k.task_id
WHERE k.project = %(project)s AND k.key = %(key)s AND k.expire_time > now()
FOR UPDATE OF t

-- name: update
-- REPLACE_INPUT / DEBOUNCE on a holder that has not started; its event in the same
-- statement. DEBOUNCE also pushes schedule_time (and the key) back by the window.
WITH updated AS (
    -- transitions: QUEUED -> SCHEDULED
    UPDATE tasks
    SET input = %(input)s::jsonb,
        input_version = input_version + 1,
        schedule_time = CASE WHEN %(debounce)s
            THEN now() + %(window_ms)s::double precision * interval '1 millisecond' ELSE schedule_time END,
        state = CASE WHEN %(debounce)s AND state = 'QUEUED' THEN 'SCHEDULED' ELSE state END,
        update_time = now()
    WHERE project = %(project)s AND id = %(id)s AND state = ANY (%(sources)s::text[])
    RETURNING *
),
key AS (
    UPDATE task_dedupe_keys
    SET expire_time = greatest(expire_time, now() + %(window_ms)s::double precision * interval '1 millisecond')
    WHERE %(debounce)s AND project = %(project)s AND key = %(key)s
      AND EXISTS (SELECT 1 FROM updated)
),
event AS (
    INSERT INTO events (project, type, subject, task)
    SELECT project, 'task.updated', 'projects/' || project || '/tasks/' || id, conveyor_task_change(ROW(updated.*)::tasks, true)
    FROM updated
)
SELECT * FROM updated
