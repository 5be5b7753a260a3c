SELECT id, display_name, callback_url, labels, create_time, update_time
FROM projects
WHERE id = %(id)s
