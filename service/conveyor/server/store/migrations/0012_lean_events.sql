-- 0012: lean task events. A task event stores what the transition changed, not a
-- to_jsonb snapshot of the whole row: writing (and WAL-logging) the input, labels and
-- every fixed field again at each start and end was most of an event's cost. The
-- snapshot a watcher receives is assembled when the event is read
-- (conveyor_task_snapshot): the task's row now, with the event's change on top.
--
-- A task's fixed fields (queue, kind, labels, retry shape, ids, create_time, ...) never
-- change, so the row now shows them as they were. The input may change (REPLACE_INPUT,
-- RetryTask's override_input): each change bumps input_version, and an event carries
-- the input only where it set it. A replayed event whose input_version is not the
-- row's takes the input from the last event before it that carried one, so it shows
-- the task as it was. Events written before 0012 hold full snapshots and are shown as
-- they are.
ALTER TABLE tasks ADD COLUMN input_version integer NOT NULL DEFAULT 0;

-- What a transition changed (with the input when `with_input`): the event's `task`.
CREATE FUNCTION conveyor_task_change(t tasks, with_input boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN jsonb_build_object(
    'project', t.project, 'id', t.id, 'state', t.state, 'state_reason', t.state_reason,
    'priority', t.priority,
    'attempt', t.attempt, 'max_attempts', t.max_attempts, 'schedule_time', t.schedule_time,
    'worker', t.worker, 'lease_id', t.lease_id, 'lease_expire_time', t.lease_expire_time,
    'cancel_requested', t.cancel_requested, 'result', t.result, 'summary', t.summary,
    'error', t.error, 'resume_token', t.resume_token, 'schedule', t.schedule,
    'start_time', t.start_time, 'end_time', t.end_time, 'update_time', t.update_time,
    'approver', t.approver, 'approved', t.approved, 'approval_comment', t.approval_comment,
    'decide_time', t.decide_time, 'input_version', t.input_version
) || CASE WHEN with_input THEN jsonb_build_object('input', t.input) ELSE '{}'::jsonb END;

-- The snapshot of event `at` of task `t` whose change was `change`: the row now, its
-- input as of the event, and the change on top.
CREATE FUNCTION conveyor_task_snapshot(t tasks, change jsonb, at bigint) RETURNS jsonb
LANGUAGE sql STABLE
RETURN to_jsonb(t) || jsonb_build_object('input', CASE
    WHEN change ? 'input' THEN change -> 'input'
    WHEN (change ->> 'input_version')::integer = t.input_version THEN t.input
    ELSE (
        SELECT p.task -> 'input' FROM events p
        WHERE p.project = t.project AND p.id < at
          AND p.subject = 'projects/' || t.project || '/tasks/' || t.id AND p.task ? 'input'
        ORDER BY p.id DESC
        LIMIT 1
    )
END) || change;

-- Each index of tasks and its readers:
--   tasks_pkey (project, id)           every read and write by task name
--   tasks_ready_idx                    the lease statement (lease_report.sql), admission
--   tasks_due_idx                      the promoter (reaper_promote.sql, reaper_next_due.sql)
--   tasks_lease_expiry_idx             the lease reaper (reaper_expire.sql)
--   tasks_request_id_idx               CreateTask's request_id (unique; task_get_by_request_id.sql)
--   tasks_root_idx                     GetTaskTree (task_tree.sql), ListTasks root_task filter
--   tasks_state_idx                    ListTasks by state (task_list.sql), statistics
--   tasks_running_queue_idx            admission: running count per queue (0009)
--   tasks_running_key_idx              admission: running count per concurrency key (0009)
--   tasks_approval_due_idx             approval timeouts (loops/approvals.py)
-- Every one has a reader, so none is dropped.
