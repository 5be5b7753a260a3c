-- The newest task this schedule created that has not ended, if any.
SELECT t.id, t.state
FROM tasks t
WHERE t.project = %(project)s AND t.schedule = %(schedule)s
  AND t.state IN ('SCHEDULED', 'QUEUED', 'AWAITING_APPROVAL', 'RUNNING')
ORDER BY t.id DESC
LIMIT 1
