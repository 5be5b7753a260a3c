-- 0041: conveyor_task_change builds a change from a composite row (it landed inside 0040
-- for an hour of the 2026-12-07 session; 0040 is back to the outbox change alone).

-- conveyor_task_change (0012, 0031) built each event's change with jsonb_build_object
-- over 26 key/value pairs: each key and each value converted on its own, ~0.3 us per
-- pair, ~7.4 us per event row (load 7). to_jsonb of a row of this composite type
-- builds the same object (the same values and JSON types, the same canonical key order,
-- NULLs as JSON null) from the fields alone: ~5.7 us per event row, measured alike. The
-- settle statement writes two such events per task (its end and the next start). Still
-- STABLE and a single expression, so inlined into each statement as before.
CREATE TYPE conveyor_task_change_fields AS (
    project text,
    id uuid,
    state text,
    state_reason text,
    priority smallint,
    attempt integer,
    max_attempts integer,
    schedule_time timestamptz,
    worker text,
    lease_id uuid,
    lease_expire_time timestamptz,
    cancel_requested boolean,
    result jsonb,
    summary text,
    error jsonb,
    resume_token text,
    schedule text,
    start_time timestamptz,
    end_time timestamptz,
    update_time timestamptz,
    approver text,
    approved boolean,
    approval_comment text,
    decide_time timestamptz,
    input_version integer
);

CREATE OR REPLACE FUNCTION conveyor_task_change(t tasks, with_input boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN to_jsonb(ROW(
    t.project, t.id, t.state, t.state_reason, t.priority, t.attempt, t.max_attempts,
    t.schedule_time, t.worker, t.lease_id, t.lease_expire_time, t.cancel_requested,
    t.result, t.summary, t.error, t.resume_token, t.schedule, t.start_time, t.end_time,
    t.update_time, t.approver, t.approved, t.approval_comment, t.decide_time, t.input_version
)::conveyor_task_change_fields)
|| CASE WHEN with_input THEN jsonb_build_object('input', t.input) ELSE '{}'::jsonb END;
