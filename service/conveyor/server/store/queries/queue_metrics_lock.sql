-- Whether this replica takes this interval's snapshot: a transaction-level lock taken
-- without waiting, so one replica counts and the others keep the row they read.
SELECT pg_try_advisory_xact_lock(hashtextextended('conveyor.queue_metrics', 0)) AS locked
