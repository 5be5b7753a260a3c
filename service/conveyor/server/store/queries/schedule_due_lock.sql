-- Due time-based schedules; SKIP LOCKED so each replica takes different ones.
SELECT * FROM schedules
WHERE state = 'ACTIVE'
  AND kind <> 'EVENT'
  AND (
      (next_run_time IS NOT NULL AND next_run_time <= %(now)s
       AND (snooze_until IS NULL OR snooze_until <= %(now)s))
      OR buffered_time IS NOT NULL
  )
ORDER BY next_run_time NULLS LAST
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
