-- A live Connect stream says it is still there; nothing when another session (or the
-- reaper) took the row over since.
UPDATE workers
SET last_seen_time = now()
WHERE project = %(project)s AND id = %(id)s AND session = %(session)s::uuid AND connected
RETURNING id
