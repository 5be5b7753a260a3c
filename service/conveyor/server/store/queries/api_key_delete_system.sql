-- Revokes every system (bootstrap) key; `conveyor admin-key reset` mints the next in
-- the same transaction.
DELETE FROM api_keys
WHERE system
RETURNING id, project
