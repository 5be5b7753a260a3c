-- 0036: conveyor_task_created (0030) is STABLE for the reason 0031 gives for
-- conveyor_task_change: jsonb_build_object over a timestamptz depends on the session's
-- TimeZone, so IMMUTABLE was wrong, and it kept PostgreSQL from inlining the function
-- into the insert statement (one SQL function call per task.created event row).
ALTER FUNCTION conveyor_task_created(
    text, uuid, text, smallint, integer, timestamptz, text, text, timestamptz, jsonb
) STABLE;
