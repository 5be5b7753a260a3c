-- Task logs (migration 0022): appending fenced by the lease, reading by attempt and seq.

-- name: append
-- Appends each item's lines (the item's element of the %(lines)s jsonb array, itself an
-- array of lines) to the attempt its lease leased, in the order given (one function call
-- per item, each seeing the ones before); an item whose lease is not the task's current
-- one gets NULLs. The lines come as one jsonb value rather than a jsonb[]: an array
-- literal would have every quote of every line escaped by the driver.
SELECT i.ord, r.attempt, r.last_seq, r.dropped
FROM unnest(%(ids)s::uuid[], %(lease_ids)s::uuid[]) WITH ORDINALITY AS i (id, lease_id, ord)
LEFT JOIN LATERAL conveyor_append_task_logs(
    %(project)s, i.id, i.lease_id, %(lines)s::jsonb -> (i.ord::integer - 1),
    %(max_bytes)s::bigint, %(max_lines)s::bigint
) AS r ON true
ORDER BY i.ord

-- name: task
-- The task's state and current attempt (0 before its first lease), and whether that
-- attempt (or %(attempt)s when set) has ended; no row when the task does not exist.
SELECT t.state, t.attempt,
       a.attempt IS NOT NULL AS started,
       a.end_time IS NOT NULL AS ended
FROM tasks t
LEFT JOIN task_attempts a
    ON a.project = t.project AND a.task_id = t.id
   AND a.attempt = CASE WHEN %(attempt)s::integer > 0 THEN %(attempt)s::integer ELSE t.attempt END
WHERE t.project = %(project)s AND t.id = %(id)s

-- name: lines
-- A page of lines after (%(after_attempt)s, %(after_seq)s), by attempt then seq, of one
-- attempt or (%(attempt)s = 0) all. The first line kept after the bound dropped older
-- ones says how many (the attempt's log_dropped).
SELECT l.attempt, l.seq, l.time, l.stream, l.level, l.message, l.fields,
       CASE WHEN l.seq = a.log_dropped + 1 THEN a.log_dropped ELSE 0 END AS dropped_count
FROM task_logs l
JOIN task_attempts a
    ON a.project = l.project AND a.task_id = l.task_id AND a.attempt = l.attempt
WHERE l.project = %(project)s AND l.task_id = %(id)s
  AND (%(attempt)s::integer = 0 OR l.attempt = %(attempt)s::integer)
  AND (l.attempt, l.seq) > (%(after_attempt)s::integer, %(after_seq)s::bigint)
ORDER BY l.attempt, l.seq
LIMIT %(limit)s

-- name: lines_desc
-- The same page newest first: before (%(after_attempt)s, %(after_seq)s), by attempt
-- then seq, both descending (the tail of a log without reading all of it).
SELECT l.attempt, l.seq, l.time, l.stream, l.level, l.message, l.fields,
       CASE WHEN l.seq = a.log_dropped + 1 THEN a.log_dropped ELSE 0 END AS dropped_count
FROM task_logs l
JOIN task_attempts a
    ON a.project = l.project AND a.task_id = l.task_id AND a.attempt = l.attempt
WHERE l.project = %(project)s AND l.task_id = %(id)s
  AND (%(attempt)s::integer = 0 OR l.attempt = %(attempt)s::integer)
  AND (l.attempt, l.seq) < (%(after_attempt)s::integer, %(after_seq)s::bigint)
ORDER BY l.attempt DESC, l.seq DESC
LIMIT %(limit)s
