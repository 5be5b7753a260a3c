-- Seconds until the earliest pending delivery falls due (NULL when there is none).
SELECT extract(epoch FROM min(next_attempt_time) - now())::float8
FROM webhook_deliveries
WHERE state = 'PENDING'
