-- 0010: request ids (AIP-155) remember what they were sent with. A retried create with
-- the same request_id returns the first result; the same request_id with a different
-- request is ALREADY_EXISTS (REQUEST_ID_REUSED) instead of silently the first result.
-- The hash is SHA-256 (hex) of the request message without its request_id, serialized
-- deterministically, so REST and gRPC callers hash alike. Rows made before 0010 have no
-- hash and match any request.
ALTER TABLE tasks ADD COLUMN request_hash text;

-- The request_ids of the other creates (CreateSchedule, CreateProject, CreateApiKey,
-- PublishEvent): claimed in the transaction that creates the resource, so concurrent
-- retries wait for the first and then read what it made. `project` is the parent's
-- project (`""` for CreateProject, whose parent is the system).
CREATE TABLE request_ids (
    project text NOT NULL,
    method text NOT NULL,
    request_id text NOT NULL,
    request_hash text NOT NULL,
    resource text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, method, request_id)
);
-- The retention loop forgets request ids as it forgets events (request_id_prune.sql).
CREATE INDEX request_ids_create_time_idx ON request_ids (create_time);
