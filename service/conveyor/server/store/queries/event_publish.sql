-- A published event; the events_notify trigger wakes the watchers at commit.
INSERT INTO events (project, type, subject, data)
VALUES (%(project)s, %(type)s, %(subject)s, %(data)s)
RETURNING id, type, time, subject, task::text AS task, data::text AS data
