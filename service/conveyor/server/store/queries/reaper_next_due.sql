-- When the next SCHEDULED task falls due (NULL when none is scheduled).
SELECT min(schedule_time) AS next_due, now() AS now FROM tasks WHERE state = 'SCHEDULED'
