-- Active EVENT schedules; SKIP LOCKED so each replica takes different ones.
SELECT * FROM schedules
WHERE state = 'ACTIVE' AND kind = 'EVENT'
ORDER BY project, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
