-- Events after the cursor, in id order, with whether each is safe to act on: committed
-- below every in-flight writer, so no smaller id can still appear. The caller stops at
-- the first unsafe one.
SELECT id, type, subject, task ->> 'schedule' AS task_schedule,
       xid < pg_snapshot_xmin(pg_current_snapshot()) AS safe
FROM events
WHERE project = %(project)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
