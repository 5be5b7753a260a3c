-- The occurrence key makes a second fire of the same occurrence a no-op.
INSERT INTO schedule_runs (project, schedule_id, occurrence, nominal_time, fire_time, note)
VALUES (%(project)s, %(schedule_id)s, %(occurrence)s, %(nominal_time)s, %(now)s, %(note)s)
ON CONFLICT DO NOTHING
RETURNING occurrence
