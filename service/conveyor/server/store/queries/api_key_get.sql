-- The stored hash and grants of one key, for authentication.
SELECT id, project, role, system, secret_hash
FROM api_keys
WHERE id = %(id)s
