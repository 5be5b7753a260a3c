-- One keyset page; empty arrays and strings mean "any".
SELECT * FROM schedules
WHERE project = %(project)s
  AND id > %(after)s
  AND (cardinality(%(states)s::text[]) = 0 OR state = ANY(%(states)s::text[]))
  AND (cardinality(%(kinds)s::text[]) = 0 OR kind = ANY(%(kinds)s::text[]))
  AND (%(created_by)s = '' OR created_by = %(created_by)s)
  -- A template without labels has no 'labels' key; '{}' matches every schedule.
  AND coalesce(task_template -> 'labels', '{}'::jsonb) @> %(labels)s::jsonb
ORDER BY id
LIMIT %(limit)s
