-- SetRateLimit with "0": removes the limit of a task kind (for one worker or every worker).
DELETE FROM rate_limits
WHERE project = %(project)s AND scope = 'kind' AND key = %(kind)s AND worker = %(worker)s
