-- The wake-up channel of event watchers: payload is the project that has new events.
LISTEN conveyor_events
