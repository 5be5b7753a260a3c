-- One command with its status; no row when it does not exist.
SELECT c.*, s.status, s.result, s.error, s.worker, s.deadline, s.dispatch_time, s.finish_time
FROM commands c JOIN command_states s USING (project, sequence)
WHERE c.project = %(project)s AND c.sequence = %(sequence)s
