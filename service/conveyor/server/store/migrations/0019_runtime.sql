-- 0019: what a running task shows and how long it may run.
--
-- progress / progress_time: the last progress a handler reported (heartbeats carry it;
-- task_attempts.progress keeps it per attempt) and when, so GetTask, ListTasks and
-- event snapshots show it without reading the attempts. progress_event_time is when
-- the last `task.progress` event was appended: events are coalesced to one per task
-- per second (lease_extend.sql), so a chatty handler cannot flood the log.
ALTER TABLE tasks ADD COLUMN progress jsonb;
ALTER TABLE tasks ADD COLUMN progress_time timestamptz;
ALTER TABLE tasks ADD COLUMN progress_event_time timestamptz;

-- execution_timeout_ms: how long one attempt may run (from its lease) before the server
-- ends it with reason EXECUTION_TIMEOUT, heartbeats or not. NULL runs without a limit.
-- A task's value is fixed at create: the request's, else its queue's default.
ALTER TABLE tasks ADD COLUMN execution_timeout_ms bigint;
ALTER TABLE queues ADD COLUMN execution_timeout_ms bigint;
