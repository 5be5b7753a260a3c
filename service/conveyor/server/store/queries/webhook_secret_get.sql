SELECT webhook_secret, previous_webhook_secret, previous_secret_expire_time
FROM projects
WHERE id = %(id)s
