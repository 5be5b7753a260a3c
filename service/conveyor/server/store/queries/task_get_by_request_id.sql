-- The tasks first created with these (project, request_id) pairs.
SELECT t.*, t.request_hash
FROM unnest(%(project)s::text[], %(request_id)s::text[]) AS r (project, request_id)
JOIN tasks t ON t.project = r.project AND t.request_id = r.request_id
