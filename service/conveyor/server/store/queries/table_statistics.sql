-- Planner statistics of the tables whose size swings with the queue (see
-- store/table_statistics.py).

-- name: stale
-- The tables of this schema changed by at least `min_changes` rows, and by at least
-- `fraction` of their rows, since they were last analyzed.
SELECT s.relname
FROM pg_stat_user_tables s
WHERE s.schemaname = current_schema()
  AND s.relname = ANY (%(tables)s::text[])
  AND s.n_mod_since_analyze >= greatest(%(min_changes)s::bigint, %(fraction)s * s.n_live_tup)
ORDER BY s.relname

-- name: claim
-- One replica analyzes a table at a time; the others skip it (held to the transaction).
SELECT pg_try_advisory_xact_lock(hashtext('conveyor.analyze.' || %(table)s))
