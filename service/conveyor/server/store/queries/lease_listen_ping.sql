-- Proves the LISTEN connection is still alive.
SELECT 1
