-- One keyset page of a project's keys, ordered by id.
SELECT id, project, role, display_name, system, create_time, last_used_time,
       rate_limits
FROM api_keys
WHERE project = %(project)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
