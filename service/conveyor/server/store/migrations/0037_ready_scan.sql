-- 0037: the ready scan of the lease statement (lease_report.sql) and the admission's
-- candidates (conveyor_lease_candidates, 0009) read tasks_ready_idx in lease order and
-- stop at `size`, whatever the statistics say. Planned with the table's statistics from
-- before a burst (a queue filled with thousands of tasks since the last ANALYZE), each
-- estimated one ready row, and the cheapest-looking plan then read every QUEUED task of
-- the project from tasks_state_idx and sorted them all (21,600 rows and ~12 ms per
-- lease in the bench) until the statistics loop caught up. With sorting disabled inside
-- the function, tasks_ready_idx is the only way left to get the lease order, however few
-- rows the planner expects. (A SET clause keeps a function from being inlined: each is
-- one call per statement.)

-- The unlimited ready tasks of queue `q` for worker `w` (see lease_report.sql,
-- ready_one_queue), locked, in lease order. VOLATILE, as it locks: it reads in a
-- snapshot of its own, and the lease statement leases only those its own snapshot sees
-- (a task committed between the two is left QUEUED, unlocked at the statement's end).
CREATE FUNCTION conveyor_ready_tasks(p text, q text, w text, size integer) RETURNS SETOF uuid
LANGUAGE sql VOLATILE
SET enable_sort = off
AS $$
    SELECT t.id
    FROM tasks t
    WHERE t.project = p AND t.state = 'QUEUED' AND t.queue = q
      AND t.concurrency_key IS NULL
      AND coalesce(t.kind <> ALL ((SELECT conveyor_rate_kinds(p, w))::text[]), true)
      AND q <> ALL ((SELECT conveyor_closed_queues(p, true))::text[])
    ORDER BY t.priority, t.schedule_time, t.id
    LIMIT size
    FOR UPDATE OF t SKIP LOCKED
$$;

ALTER FUNCTION conveyor_lease_candidates(text, text[], integer, uuid[], text[])
    SET enable_sort = off;
