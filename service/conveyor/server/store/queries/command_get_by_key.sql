-- The command a principal issued with an idempotency key, if any.
SELECT c.*, s.status, s.result, s.error, s.worker, s.deadline, s.dispatch_time, s.finish_time
FROM commands c JOIN command_states s USING (project, sequence)
WHERE c.project = %(project)s AND c.issued_by = %(issued_by)s
  AND c.idempotency_key = %(idempotency_key)s
