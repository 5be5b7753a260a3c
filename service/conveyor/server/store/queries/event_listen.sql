-- The wake-up channels of event watchers (payload: the project that has new events) and
-- of webhook dispatchers (payload empty: the outbox has new rows).
LISTEN conveyor_events;
LISTEN conveyor_webhooks
