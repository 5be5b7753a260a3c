-- 0006: operator commands in a signed, hash-chained audit log (DESIGN.md section 3).

-- The head of each project's chain: the last sequence and its digest. An append takes
-- this row FOR UPDATE (an upsert), so appends of one project are serialised while
-- other projects append in parallel; the lock is held until the appending
-- transaction ends, so sequences are gap-free and each row chains onto the previous.
CREATE TABLE audit_heads (
    project text PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    sequence bigint NOT NULL DEFAULT 0,
    digest text NOT NULL DEFAULT ''
);

-- The chain itself: immutable once written (see commands_immutable). The command's id
-- is its sequence number: projects/{project}/commands/{sequence}.
-- digest = SHA-256(prev_digest || canonical bytes), signature = HMAC-SHA-256(server
-- key, digest); domain/audit.py defines the canonical bytes.
CREATE TABLE commands (
    project text NOT NULL REFERENCES projects (id),
    sequence bigint NOT NULL,
    verb text NOT NULL,
    target text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}',
    issued_by text NOT NULL,
    idempotency_key text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    prev_digest text NOT NULL,
    digest text NOT NULL,
    signature text NOT NULL,
    PRIMARY KEY (project, sequence),
    CONSTRAINT commands_sequence_valid CHECK (sequence >= 1)
);

-- The same idempotency key from the same principal names one command.
CREATE UNIQUE INDEX commands_idempotency_idx ON commands (project, issued_by, idempotency_key)
    WHERE idempotency_key <> '';
CREATE INDEX commands_create_time_idx ON commands (project, create_time);

-- Chained rows are never rewritten or removed, whoever the server's role is: the
-- trigger refuses UPDATE, DELETE and TRUNCATE. (Only a superuser can switch it off,
-- and VerifyAuditLog then still names the first row that was touched.)
CREATE FUNCTION conveyor_commands_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'commands are an append-only audit log: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER commands_immutable BEFORE UPDATE OR DELETE ON commands
FOR EACH ROW EXECUTE FUNCTION conveyor_commands_immutable();
CREATE TRIGGER commands_no_truncate BEFORE TRUNCATE ON commands
FOR EACH STATEMENT EXECUTE FUNCTION conveyor_commands_immutable();

-- How far each command has come: mutable, outside the digest. Status changes are made
-- by the system (a worker's acknowledgement, a timeout, a background job), not by a
-- principal, and each one appends a command.<status> event in its transaction, so the
-- event log keeps their history while the chain stays immutable.
CREATE TABLE command_states (
    project text NOT NULL,
    sequence bigint NOT NULL,
    status text NOT NULL,
    result jsonb NOT NULL DEFAULT '{}',
    -- google.rpc.Status as JSON {code, message} when FAILED or TIMED_OUT.
    error jsonb,
    -- Worker control: the addressed worker's id and when an unacknowledged command times out.
    worker text NOT NULL DEFAULT '',
    deadline timestamptz,
    dispatch_time timestamptz,
    finish_time timestamptz,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, sequence),
    FOREIGN KEY (project, sequence) REFERENCES commands (project, sequence) ON DELETE CASCADE,
    CONSTRAINT command_states_status_valid CHECK (
        status IN ('ISSUED', 'DISPATCHED', 'SUCCEEDED', 'FAILED', 'TIMED_OUT'))
);

CREATE INDEX command_states_open_worker_idx ON command_states (project, worker, sequence)
    WHERE worker <> '' AND status IN ('ISSUED', 'DISPATCHED');
CREATE INDEX command_states_deadline_idx ON command_states (deadline)
    WHERE status IN ('ISSUED', 'DISPATCHED') AND deadline IS NOT NULL;
