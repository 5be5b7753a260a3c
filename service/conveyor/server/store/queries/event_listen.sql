-- The replica's wake-up channels: idle workers (payload '<project>/<queue>' when tasks
-- became ready), event watchers (payload: the project that has new events) and webhook
-- dispatchers (payload empty: the outbox has new rows).
LISTEN conveyor_tasks;
LISTEN conveyor_events;
LISTEN conveyor_webhooks
