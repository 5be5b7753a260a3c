-- The earliest deadline of an open command, for the timeout loop's next pass.
SELECT min(deadline) FROM command_states
WHERE status IN ('ISSUED', 'DISPATCHED') AND deadline IS NOT NULL
