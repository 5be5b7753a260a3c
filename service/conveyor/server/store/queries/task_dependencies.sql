-- Task dependencies (Task.depends_on, migration 0023): attaching a new task to the
-- tasks it depends on, in the transaction that creates it, and reading them for
-- GetTaskTree. Resolving them as they end is the database's (triggers of 0023).

-- name: flag
-- Marks the dependencies that had no dependents yet, so that their end now fires the
-- resolving trigger. NOWAIT here and in `lock`: a create never waits for a lock while
-- holding others (a worker's report may be ending several of these rows in another
-- order), so it cannot deadlock; the caller retries the whole create instead.
UPDATE tasks t
SET has_dependents = true
FROM (
    SELECT d.id FROM tasks d
    WHERE d.project = %(project)s AND d.id = ANY (%(ids)s::uuid[]) AND NOT d.has_dependents
    ORDER BY d.id
    FOR NO KEY UPDATE NOWAIT
) AS f
WHERE t.project = %(project)s AND t.id = f.id

-- name: lock
-- The dependencies as they are now, share-locked until the create commits: a
-- dependency cannot end meanwhile, so either its end (after this commit) sees the new
-- edges, or this read sees its end (a row being ended refuses the lock: retried).
SELECT d.id, d.state
FROM tasks d
WHERE d.project = %(project)s AND d.id = ANY (%(ids)s::uuid[])
ORDER BY d.id
FOR SHARE NOWAIT

-- name: attach
-- The new task's edges, and its columns: it waits for every dependency until each is
-- resolved (the `ended` and `count` blocks take those that have ended already).
WITH edges AS (
    INSERT INTO task_dependencies (project, task_id, depends_on)
    SELECT %(project)s, %(id)s, d.id FROM unnest(%(ids)s::uuid[]) AS d (id)
)
UPDATE tasks
SET depends_on = %(ids)s::uuid[], dependency_failure_policy = %(policy)s,
    deps_remaining = cardinality(%(ids)s::uuid[])
WHERE project = %(project)s AND id = %(id)s

-- name: ended
-- Dependencies that had ended before the create: their edges resolved as their end
-- would have, pending for `count`.
UPDATE task_dependencies e
SET outcome = d.state, pending = true
FROM unnest(%(ids)s::uuid[], %(states)s::text[]) AS d (id, state)
WHERE e.project = %(project)s AND e.task_id = %(id)s AND e.depends_on = d.id

-- name: count
-- Counts the pending edges into the new task (a separate statement: it must see them).
SELECT conveyor_count_dependencies() AS changed

-- name: outside
-- The tasks that `ids` (the tasks of a tree) depend on and that are not among them,
-- oldest first (GetTaskTree's dependencies).
SELECT t.*
FROM tasks t
WHERE t.project = %(project)s
  AND t.id IN (
      SELECT e.depends_on FROM task_dependencies e
      WHERE e.project = %(project)s AND e.task_id = ANY (%(ids)s::uuid[])
  )
  AND t.id <> ALL (%(ids)s::uuid[])
ORDER BY t.id
LIMIT %(limit)s
