"""Event streams of one replica: a LISTEN connection, per-project tails, bounded subscribers.

    EventListener   LISTEN conveyor_events; a notification names a project
        │
    EventHub        one tail per watched project: reads final events once, fans out
        │
    Subscription    one per WatchEvents stream: a bounded buffer; overflow cuts it off

A tail reads each event once for all of its subscribers and never waits for one: a
subscriber whose buffer is full is detached and its stream ends with RESOURCE_EXHAUSTED,
so a slow client costs memory up to its buffer and nothing else.
"""
