-- ListTasks: one keyset page of a project's tasks. The `select` block is completed
-- with the filter blocks the request uses and one order block (psycopg.sql
-- composition of these fixed fragments; every value is a parameter).
-- "create_time" order is id order: a task id is a UUIDv7 carrying its create_time.
-- {columns} is `t.*`, or for ListTasks' pages the columns of a TaskRow in its order and
-- the blocked reason (with the `page_join` block as {join}).

-- name: select
SELECT {columns}
FROM tasks t
{join}
WHERE t.project = %(project)s
{filters}
ORDER BY {order}
LIMIT %(limit)s

-- name: states
AND t.state = ANY (%(states)s::text[])
-- name: priorities
AND t.priority = ANY (%(priorities)s::smallint[])
-- name: kinds
AND t.kind = ANY (%(kinds)s::text[])
-- name: queues
AND t.queue = ANY (%(queues)s::text[])
-- name: workers
AND t.worker = ANY (%(workers)s::text[])
-- name: correlation_id
AND t.correlation_id = %(correlation_id)s
-- name: creators
AND t.creator = ANY (%(creators)s::text[])
-- name: root_task
AND t.root_task = %(root_task)s::uuid
-- name: labels
AND t.labels @> %(labels)s::jsonb
-- name: search
AND (t.kind ILIKE %(search)s OR t.queue ILIKE %(search)s
     OR t.worker ILIKE %(search)s OR t.summary ILIKE %(search)s)
-- name: create_time_after
AND t.create_time >= %(create_time_after)s AND t.id >= %(id_floor)s::uuid
-- name: create_time_before
AND t.create_time < %(create_time_before)s AND t.id < %(id_ceiling)s::uuid

-- name: page_join
-- task_blocked.sql's reason reads the task's queue as q (NULL for a queue never configured).
LEFT JOIN queues q ON q.project = t.project AND q.id = t.queue

-- name: count
-- How many tasks a filter matches, up to its LIMIT (ExportTasks: is it a bulk action?).
SELECT count(*) AS n FROM ({select}) AS matching

-- name: after_id
AND t.id > %(after_id)s::uuid
-- name: after_id_desc
AND t.id < %(after_id)s::uuid
-- name: after_priority
AND (t.priority, t.id) > (%(after_priority)s::smallint, %(after_id)s::uuid)
-- name: after_priority_desc
AND (t.priority, t.id) < (%(after_priority)s::smallint, %(after_id)s::uuid)

-- name: order_id
t.id
-- name: order_id_desc
t.id DESC
-- name: order_priority
t.priority, t.id
-- name: order_priority_desc
t.priority DESC, t.id DESC
