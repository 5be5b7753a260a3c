-- 0026: the trace context of the request that created a task (a W3C traceparent, from
-- the caller's metadata or the server's own span), handed to the worker with each
-- lease so its handler's span continues the producer's trace. NULL: none was given.
-- Read only with the task: no index.
ALTER TABLE tasks ADD COLUMN traceparent text;
