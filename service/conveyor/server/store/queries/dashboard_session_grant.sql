-- The grants of a live session's key, with the session's stored hash, for authentication
-- (and the key's request limits: a session spends its key's budget).
SELECT k.id, k.project, k.role, k.system, s.secret_hash,
       k.rate_limits, p.rate_limits AS project_rate_limits
FROM dashboard_sessions s
JOIN api_keys k ON k.id = s.key_id
JOIN projects p ON p.id = k.project
WHERE s.id = %(id)s AND s.revoke_time IS NULL AND s.expire_time > now()
