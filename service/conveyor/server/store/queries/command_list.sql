-- name: select
SELECT c.*, s.status, s.result, s.error, s.worker, s.deadline, s.dispatch_time, s.finish_time
FROM commands c JOIN command_states s USING (project, sequence)
WHERE c.project = %(project)s
{filters}
ORDER BY c.sequence DESC
LIMIT %(limit)s

-- name: statuses
AND s.status = ANY (%(statuses)s::text[])

-- name: verbs
AND c.verb = ANY (%(verbs)s::text[])

-- name: issued_by
AND c.issued_by = %(issued_by)s

-- name: create_time_after
AND c.create_time >= %(create_time_after)s

-- name: create_time_before
AND c.create_time < %(create_time_before)s

-- name: before_sequence
AND c.sequence < %(before_sequence)s
