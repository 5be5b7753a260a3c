INSERT INTO events (project, type, subject, task, data)
VALUES (%(project)s, %(type)s, %(subject)s, %(task)s, %(data)s)
RETURNING id
