-- last_used_time is approximate on purpose: written at most once a minute per key.
UPDATE api_keys SET last_used_time = now()
WHERE id = %(id)s AND (last_used_time IS NULL OR last_used_time < now() - interval '1 minute')
