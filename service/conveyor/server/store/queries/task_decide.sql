-- Approves or rejects AWAITING_APPROVAL tasks and appends each one's event, in one
-- statement. The `select` block is completed with one `due` block: a single task
-- (ApproveTask / RejectTask) or the tasks whose approval timeout has passed (the loop,
-- SKIP LOCKED so replicas share the work). States and event types come from the
-- transition table (states.py). Each task that became QUEUED wakes its queue.

-- name: select
WITH due AS (
    {due}
),
decided AS (
    -- transitions: AWAITING_APPROVAL -> QUEUED, AWAITING_APPROVAL -> SCHEDULED, AWAITING_APPROVAL -> CANCELLED
    UPDATE tasks t
    SET state = CASE
            WHEN NOT due.approved THEN %(rejected)s
            -- Approved but still waiting for dependencies: SCHEDULED until they end.
            WHEN t.schedule_time > now() OR t.deps_remaining > 0 THEN %(later)s
            ELSE %(queued)s
        END,
        state_reason = CASE WHEN due.approved THEN t.state_reason ELSE due.comment END,
        end_time = CASE WHEN due.approved THEN t.end_time ELSE now() END,
        approver = %(approver)s,
        approved = due.approved,
        approval_comment = due.comment,
        decide_time = now(),
        update_time = now()
    FROM due
    WHERE t.project = due.project AND t.id = due.id
    RETURNING t.*
),
event AS (
    INSERT INTO events (project, type, subject, task, data)
    SELECT project,
           CASE state WHEN %(rejected)s THEN %(event_rejected)s
                      WHEN %(later)s THEN %(event_later)s
                      ELSE %(event_approved)s END,
           'projects/' || project || '/tasks/' || id, conveyor_task_change(ROW(decided.*)::tasks),
           jsonb_build_object('approver', approver, 'approved', approved,
                              'comment', approval_comment)
    FROM decided
),
woken AS (
    SELECT count(pg_notify('conveyor_tasks', k.key)) AS n
    FROM (SELECT DISTINCT project || '/' || queue AS key FROM decided
          WHERE state = %(queued)s) AS k
)
SELECT decided.*, (SELECT n FROM woken) AS woken FROM decided

-- name: one
SELECT project, id, %(decision)s::boolean AS approved, %(comment)s::text AS comment
FROM tasks
WHERE project = %(project)s AND id = %(id)s AND state = ANY (%(sources)s::text[])
FOR UPDATE

-- name: timed_out
-- The state is written out, not the `sources` parameter: the pool's generic plan cannot
-- match a parameter to tasks_approval_due_idx's predicate, and scanned every task of
-- every project at each pass (approvals.py checks the transition table agrees).
SELECT project, id, approval_timeout_action = 'APPROVE' AS approved,
       'approval timed out' AS comment
FROM tasks
WHERE state = 'AWAITING_APPROVAL' AND approval_timeout_ms IS NOT NULL
  AND approval_timeout_action IN ('APPROVE', 'REJECT')
  AND create_time + approval_timeout_ms * interval '1 millisecond' <= now()
ORDER BY create_time
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
