-- The per-project bulk-action lock (domain/bulk_actions.py): a session advisory lock
-- on (%(space)s, %(key)s), held on its own connection while the action runs, so it
-- works across replicas and is released by PostgreSQL if the holder's session dies.
-- The holder labels its session (application_name) with the action, so a refused
-- caller can name what is running.

-- name: label
SELECT current_setting('application_name') AS previous,
       set_config('application_name', %(label)s, false) AS label

-- name: try_lock
SELECT pg_try_advisory_lock(%(space)s, %(key)s) AS locked

-- name: holder
-- Two-key advisory locks show as classid = first key, objid = second, objsubid = 2.
SELECT a.application_name
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = %(space)s::oid AND l.objid = %(key)s::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LIMIT 1

-- name: unlock
SELECT pg_advisory_unlock(%(space)s, %(key)s) AS unlocked,
       set_config('application_name', %(previous)s, false) AS label

-- name: relabel
SELECT set_config('application_name', %(previous)s, false) AS label
