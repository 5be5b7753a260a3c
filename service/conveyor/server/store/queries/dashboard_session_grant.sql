-- The grants of a live session's key, with the session's stored hash, for authentication.
SELECT k.id, k.project, k.role, k.system, s.secret_hash
FROM dashboard_sessions s
JOIN api_keys k ON k.id = s.key_id
WHERE s.id = %(id)s AND s.revoke_time IS NULL AND s.expire_time > now()
