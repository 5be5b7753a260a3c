-- The per-project bulk-action lock (domain/bulk_actions.py): a transaction advisory lock
-- on (%(space)s, %(key)s), taken in a transaction its connection keeps open while the
-- action runs, so it works across replicas, through a transaction-mode pooler (which
-- keeps the transaction on one server session), and is released by PostgreSQL at the
-- end of the transaction or if the holder's session dies. The holder labels its
-- session (application_name, for the transaction only) with the action, so a refused
-- caller can name what is running.

-- name: try_lock
SELECT set_config('application_name', %(label)s, true) AS label,
       pg_try_advisory_xact_lock(%(space)s, %(key)s) AS locked

-- name: holder
-- Two-key advisory locks show as classid = first key, objid = second, objsubid = 2.
SELECT a.application_name
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = %(space)s::oid AND l.objid = %(key)s::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LIMIT 1
