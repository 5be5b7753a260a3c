-- One key of a project as ListApiKeys shows it (a CreateApiKey retried by request_id).
SELECT id, project, role, display_name, system, create_time, last_used_time,
       rate_limits
FROM api_keys
WHERE project = %(project)s AND id = %(id)s
