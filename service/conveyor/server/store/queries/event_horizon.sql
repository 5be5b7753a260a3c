-- The position of a watcher that starts from now: every event id up to it is final.
SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) - 1
