-- One keyset page of a project's workers (by id) with the tasks each runs now; the
-- project's running tasks are read once for the whole page.
WITH page AS (
    SELECT * FROM workers
    WHERE project = %(project)s AND id > %(after)s
    ORDER BY id
    LIMIT %(limit)s::integer
),
active AS (
    SELECT t.worker, array_agg(t.id ORDER BY t.id) AS active_tasks
    FROM tasks t
    WHERE t.project = %(project)s AND t.state = 'RUNNING'
      AND t.worker IN (SELECT id FROM page)
    GROUP BY t.worker
)
SELECT p.*, coalesce(a.active_tasks, '{}') AS active_tasks
FROM page p
LEFT JOIN active a ON a.worker = p.id
ORDER BY p.id
