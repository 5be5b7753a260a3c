-- 0007: human approval: who decided, how, and when (Task.approval); and the index the
-- approval-timeout loop scans.
ALTER TABLE tasks
    ADD COLUMN approver text NOT NULL DEFAULT '',
    ADD COLUMN approved boolean,
    ADD COLUMN approval_comment text NOT NULL DEFAULT '',
    ADD COLUMN decide_time timestamptz;

CREATE INDEX tasks_approval_due_idx ON tasks (create_time)
    WHERE state = 'AWAITING_APPROVAL' AND approval_timeout_ms IS NOT NULL;
