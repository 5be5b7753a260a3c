-- 0021: retention of finished tasks (Queue.finished_task_ttl, loops/task_retention.py).
-- finished_task_ttl_ms: how long a queue's finished tasks are kept after end_time.
-- NULL: the server default (30 days); 0: kept forever.
ALTER TABLE queues ADD COLUMN finished_task_ttl_ms bigint;

-- The project's default for its queues that set none (Project.finished_task_ttl).
ALTER TABLE projects ADD COLUMN finished_task_ttl_ms bigint;

-- The retention loop walks finished tasks oldest first, so a pass reads only the
-- expired ones instead of every finished task.
CREATE INDEX tasks_finished_idx ON tasks (end_time)
    WHERE state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'INTERRUPTED');
