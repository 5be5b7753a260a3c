INSERT INTO api_keys (id, project, role, display_name, secret_hash, system, rate_limits)
VALUES (
    %(id)s, %(project)s, %(role)s, %(display_name)s, %(secret_hash)s, %(system)s,
    %(rate_limits)s
)
RETURNING id, project, role, display_name, system, create_time, last_used_time,
       rate_limits
