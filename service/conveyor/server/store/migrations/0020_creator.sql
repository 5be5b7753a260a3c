-- 0020: who created a task (Task.creator): the calling API key's name, or the name of
-- the schedule that fired it. Empty for tasks created before 0020. ListTasks filters
-- on it (TaskFilter.creators); no index: it narrows a project's tasks like kinds do.
ALTER TABLE tasks ADD COLUMN creator text NOT NULL DEFAULT '';
