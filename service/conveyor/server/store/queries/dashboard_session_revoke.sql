-- Sign-out: the session stops working at once on this replica, and within the
-- authentication cache's lifetime on the others.
UPDATE dashboard_sessions SET revoke_time = now()
WHERE id = %(id)s AND revoke_time IS NULL
RETURNING key_id
