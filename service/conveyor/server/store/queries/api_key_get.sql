-- The stored hash and grants of one key, for authentication, with its request limits
-- and its project's defaults.
SELECT k.id, k.project, k.role, k.system, k.secret_hash,
       k.rate_limits, p.rate_limits AS project_rate_limits
FROM api_keys k
JOIN projects p ON p.id = k.project
WHERE k.id = %(id)s
