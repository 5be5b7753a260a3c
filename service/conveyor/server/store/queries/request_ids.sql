-- name: claim
-- Claims a request_id for a create about to run in this transaction. Returns a row when
-- it is new; nothing when another create holds it (a concurrent one: this waits for it
-- to commit or roll back first).
INSERT INTO request_ids (project, method, request_id, request_hash)
VALUES (%(project)s, %(method)s, %(request_id)s, %(request_hash)s)
ON CONFLICT DO NOTHING
RETURNING true;

-- name: get
-- What an earlier create with this request_id was sent with and made.
SELECT request_hash, resource FROM request_ids
WHERE project = %(project)s AND method = %(method)s AND request_id = %(request_id)s;

-- name: set_resource
-- The resource the claiming create made (same transaction as the claim).
UPDATE request_ids SET resource = %(resource)s
WHERE project = %(project)s AND method = %(method)s AND request_id = %(request_id)s;
