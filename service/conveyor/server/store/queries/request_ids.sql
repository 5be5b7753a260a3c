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

-- name: prune
-- One batch of request ids older than the cutoff (SKIP LOCKED: replicas share the work).
WITH doomed AS (
    SELECT project, method, request_id
    FROM request_ids
    WHERE create_time < %(cutoff)s
    ORDER BY create_time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM request_ids r
USING doomed
WHERE r.project = doomed.project AND r.method = doomed.method
  AND r.request_id = doomed.request_id;

-- name: set_resource
-- The resource the claiming create made (same transaction as the claim).
UPDATE request_ids SET resource = %(resource)s
WHERE project = %(project)s AND method = %(method)s AND request_id = %(request_id)s;
