-- Why reports matched nothing: the task as it is now (NULL columns when it does not
-- exist) and the outcome of the attempt the report's lease_id belongs to, if any.
SELECT r.ord, r.lease_id AS reported_lease_id, a.outcome AS attempt_outcome, t.*
FROM unnest(%(ids)s::uuid[], %(lease_ids)s::uuid[]) WITH ORDINALITY AS r (id, lease_id, ord)
LEFT JOIN tasks t ON t.project = %(project)s AND t.id = r.id
LEFT JOIN task_attempts a
  ON a.project = %(project)s AND a.task_id = r.id AND a.lease_id = r.lease_id
ORDER BY r.ord
