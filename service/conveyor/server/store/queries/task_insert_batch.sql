-- Inserts a batch of new tasks in one statement (and so one commit in autocommit).
-- Per item it checks the project
-- and the parent task, fills unset retry-policy fields from the queue's default,
-- creates missing queues, appends a task.created event and NOTIFYs the ready queues.
-- With %(atomic)s, one refused item makes the statement insert nothing.
-- A request_id already used in the project inserts nothing for that item; the
-- caller reads the first task back (it may not be visible in this snapshot) and compares
-- its request_hash (0010).
WITH item AS (
    -- One JSON array per task (see task_inserts._row): one parameter for the whole batch,
    -- parsed by the server, so a flush costs the same few calls however many it carries.
    SELECT
        (e.ord - 1)::integer AS ord, r ->> 0 AS project, (r ->> 1)::uuid AS id,
        r ->> 2 AS queue, r ->> 3 AS kind, (r ->> 4)::smallint AS priority, r ->> 5 AS state,
        (r ->> 6)::integer AS max_attempts, r ->> 7 AS backoff,
        (r ->> 8)::bigint AS initial_backoff_ms, (r ->> 9)::bigint AS max_backoff_ms,
        (r ->> 10)::timestamptz AS schedule_time, (r ->> 11)::bigint AS lease_duration_ms,
        r ->> 12 AS concurrency_key, (r ->> 13)::integer AS concurrency_limit,
        (r ->> 14)::boolean AS requires_approval, (r ->> 15)::bigint AS approval_timeout_ms,
        r ->> 16 AS approval_timeout_action, r ->> 17 AS correlation_id,
        (r ->> 18)::uuid AS parent_task, r ->> 19 AS callback_url, r ->> 20 AS resume_token,
        r ->> 21 AS schedule, r ->> 22 AS request_id, (r ->> 23)::timestamptz AS create_time,
        (r ->> 24)::boolean AS upsert_queue, r -> 25 AS labels,
        nullif(r -> 26, 'null'::jsonb) AS input, r ->> 27 AS request_hash,
        r ->> 28 AS creator, (r ->> 29)::bigint AS execution_timeout_ms,
        r ->> 30 AS traceparent
    FROM jsonb_array_elements(%(items)s::jsonb) WITH ORDINALITY AS e (r, ord)
),
checked AS (
    SELECT
        item.*,
        p.id IS NOT NULL AS project_ok,
        (item.parent_task IS NULL OR parent.id IS NOT NULL) AS parent_ok,
        coalesce(parent.root_task, item.id) AS root_task,
        coalesce(q.default_retry_policy, '{}') AS policy,
        q.execution_timeout_ms AS queue_execution_timeout_ms
    FROM item
    -- Each lookup is a LATERAL subquery with LIMIT 1, which the planner cannot flatten
    -- into a join: one primary-key probe per item, never a hash join over a scan of the
    -- table, which it picked for tasks whenever its statistics predated a burst of
    -- creates (3.9 ms of a 13 ms insert of 250 at 12,000 tasks, growing with the table).
    LEFT JOIN LATERAL (SELECT p.id FROM projects p WHERE p.id = item.project LIMIT 1) p ON true
    LEFT JOIN LATERAL (
        SELECT t.id, t.root_task FROM tasks t
        WHERE item.parent_task IS NOT NULL AND t.project = item.project AND t.id = item.parent_task
        LIMIT 1
    ) parent ON true
    LEFT JOIN LATERAL (
        SELECT q.default_retry_policy, q.execution_timeout_ms FROM queues q
        WHERE q.project = item.project AND q.id = item.queue LIMIT 1
    ) q ON true
),
verdict AS (
    SELECT %(atomic)s::boolean AND EXISTS (
        SELECT 1 FROM checked WHERE NOT (project_ok AND parent_ok)
    ) AS aborted
),
insertable AS (
    SELECT checked.*
    FROM checked, verdict
    WHERE project_ok AND parent_ok AND NOT verdict.aborted
),
new_queue AS (
    INSERT INTO queues (project, id)
    SELECT DISTINCT project, queue FROM insertable WHERE upsert_queue
    ORDER BY project, queue
    ON CONFLICT DO NOTHING
),
inserted AS (
    INSERT INTO tasks (
        project, id, queue, kind, input, priority, state, labels,
        max_attempts, backoff, initial_backoff_ms, max_backoff_ms,
        schedule_time, lease_duration_ms, concurrency_key, concurrency_limit,
        requires_approval, approval_timeout_ms, approval_timeout_action, correlation_id,
        parent_task, root_task, callback_url, resume_token, schedule, request_id,
        request_hash, create_time, update_time, creator, execution_timeout_ms, traceparent
    )
    SELECT
        project, id, queue, kind, input, priority, state, labels,
        coalesce(max_attempts, (policy ->> 'max_attempts')::integer, 3),
        coalesce(backoff, policy ->> 'backoff', 'EXPONENTIAL_JITTER'),
        coalesce(initial_backoff_ms, (policy ->> 'initial_backoff_ms')::bigint, 1000),
        coalesce(max_backoff_ms, (policy ->> 'max_backoff_ms')::bigint, 3600000),
        schedule_time, lease_duration_ms, concurrency_key, concurrency_limit,
        requires_approval, approval_timeout_ms, approval_timeout_action, correlation_id,
        parent_task, root_task, callback_url, resume_token, schedule, request_id,
        request_hash, create_time, now(), creator,
        coalesce(execution_timeout_ms, queue_execution_timeout_ms), traceparent
    FROM insertable
    ORDER BY ord
    ON CONFLICT (project, request_id) WHERE request_id IS NOT NULL DO NOTHING
    RETURNING *
),
event AS (
    INSERT INTO events (project, type, subject, task)
    SELECT project, 'task.created', 'projects/' || project || '/tasks/' || id, conveyor_task_created(project,id,state,priority,max_attempts,schedule_time,resume_token,schedule,update_time,input)
    FROM inserted
    ORDER BY id
),
notified AS (
    -- %(origin)s: '/<replica>' from a replica that wakes its own workers at once (it
    -- skips this notification when it comes back), else ''.
    SELECT count(pg_notify('conveyor_tasks', ready.project || '/' || ready.queue || %(origin)s::text)) AS n
    FROM (SELECT DISTINCT project, queue FROM inserted WHERE state = 'QUEUED') AS ready
)
SELECT
    c.ord, c.project_ok, c.parent_ok, verdict.aborted, i.id IS NOT NULL AS created,
    i.root_task, i.max_attempts, i.backoff, i.initial_backoff_ms,
    i.max_backoff_ms, i.update_time, i.execution_timeout_ms
FROM checked c
CROSS JOIN verdict
CROSS JOIN notified
LEFT JOIN inserted i ON i.project = c.project AND i.id = c.id
ORDER BY c.ord
