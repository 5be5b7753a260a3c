-- A project's redaction rule (domain/redaction.py): its redact_paths and webhook choice,
-- and the redact_paths of each of its queues that sets any. No row: no such project.
SELECT p.redact_paths AS project_paths,
       p.webhook_full_input,
       coalesce(
           jsonb_object_agg(q.id, to_jsonb(q.redact_paths)) FILTER (WHERE q.id IS NOT NULL),
           '{}'
       ) AS queue_paths
FROM projects p
LEFT JOIN queues q ON q.project = p.id AND cardinality(q.redact_paths) > 0
WHERE p.id = %(project)s
GROUP BY p.id
