-- BatchDeleteTasks. Only tasks in %(terminal)s are deleted (their attempts cascade);
-- the guard is repeated in the DELETE so a task requeued meanwhile is kept.

-- name: names
-- The named tasks that are terminal; `skipped` lists the named ones that are not
-- (unknown names are in neither).
WITH deleted AS (
    DELETE FROM tasks
    WHERE project = %(project)s AND id = ANY (%(ids)s::uuid[])
      AND state = ANY (%(terminal)s::text[])
    RETURNING id
)
SELECT
    (SELECT count(*) FROM deleted) AS deleted,
    ARRAY(
        SELECT id FROM tasks
        WHERE project = %(project)s AND id = ANY (%(ids)s::uuid[])
          AND state <> ALL (%(terminal)s::text[])
        ORDER BY id
    ) AS skipped

-- name: filter
-- Up to %(limit)s terminal tasks matching a ListTasks query (the select, which names
-- its rows t and is limited to terminal states by the caller).
WITH picked AS (
    {select}
),
deleted AS (
    DELETE FROM tasks d
    USING picked
    WHERE d.project = picked.project AND d.id = picked.id
      AND d.state = ANY (%(terminal)s::text[])
    RETURNING d.id
)
SELECT (SELECT count(*) FROM deleted) AS deleted, ARRAY[]::uuid[] AS skipped
