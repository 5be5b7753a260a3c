-- Proves the event LISTEN connection is still alive.
SELECT 1
