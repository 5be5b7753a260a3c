-- The attempts of a delivery, oldest first.
SELECT attempt, start_time, duration_ms, status_code, error
FROM webhook_attempts
WHERE delivery = %(delivery)s
ORDER BY attempt
