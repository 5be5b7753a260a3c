-- One worker with the names of the tasks it runs now.
SELECT w.*,
       ARRAY(
           SELECT t.id FROM tasks t
           WHERE t.project = w.project AND t.state = 'RUNNING' AND t.worker = w.id
           ORDER BY t.id
       ) AS active_tasks
FROM workers w
WHERE w.project = %(project)s AND w.id = %(id)s
