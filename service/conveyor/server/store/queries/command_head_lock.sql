-- Takes the project's audit head FOR UPDATE (creating it at 0 for the first command)
-- and reads the database clock: the new command's create_time. The lock serialises
-- appends of one project until the appending transaction ends.
INSERT INTO audit_heads AS h (project) VALUES (%(project)s)
ON CONFLICT (project) DO UPDATE SET project = h.project
RETURNING h.sequence, h.digest, clock_timestamp() AS now
