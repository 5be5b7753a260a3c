-- 0008: dedupe keys. A key is held by one task until expire_time; claiming it is one
-- INSERT ... ON CONFLICT, which takes over an expired key atomically and leaves a live
-- one alone (race-safe, no read-then-write). Deleting the holder frees its key.
CREATE TABLE task_dedupe_keys (
    project text NOT NULL,
    key text NOT NULL,
    task_id uuid NOT NULL,
    expire_time timestamptz NOT NULL,
    PRIMARY KEY (project, key),
    FOREIGN KEY (project, task_id) REFERENCES tasks (project, id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);

CREATE INDEX task_dedupe_keys_task_idx ON task_dedupe_keys (project, task_id);
