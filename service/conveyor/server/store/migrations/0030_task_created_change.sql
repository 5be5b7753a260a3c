-- 0030: the change of a task.created event without building the task's row.
-- conveyor_task_change(ROW(inserted.*)::tasks, true) forms the whole 60-column row of
-- each new task and converts every field to JSON; a new task's mutable fields all hold
-- their column defaults, so only the fields an insert sets are converted and the rest
-- is one constant (~10 us of database CPU per task in a BatchCreateTasks of 1000).
-- tests/test_tasks_create.py checks that it equals conveyor_task_change for new tasks.
CREATE FUNCTION conveyor_task_created(
    project text, id uuid, state text, priority smallint, max_attempts integer,
    schedule_time timestamptz, resume_token text, schedule text, update_time timestamptz,
    input jsonb
) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN jsonb_build_object(
    'project', project, 'id', id, 'state', state, 'priority', priority,
    'max_attempts', max_attempts, 'schedule_time', schedule_time,
    'resume_token', resume_token, 'schedule', schedule, 'update_time', update_time,
    'input', input
) || '{"state_reason": "", "attempt": 0, "worker": "", "lease_id": null,
      "lease_expire_time": null, "cancel_requested": false, "result": null, "summary": "",
      "error": null, "start_time": null, "end_time": null, "approver": "", "approved": null,
      "approval_comment": "", "decide_time": null, "input_version": 0}'::jsonb;
