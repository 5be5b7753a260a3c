-- One event of a project by id (a PublishEvent retried by request_id).
SELECT id, type, time, subject, task::text AS task, data::text AS data
FROM events
WHERE project = %(project)s AND id = %(id)s
