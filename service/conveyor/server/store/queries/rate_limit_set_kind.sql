-- SetRateLimit: the token bucket of a task kind, for one worker or ('' ) every worker.
-- A new rate starts with a full bucket. (Table: migration 0005.)
INSERT INTO rate_limits (project, scope, key, worker, rate)
VALUES (%(project)s, 'kind', %(kind)s, %(worker)s, %(rate)s)
ON CONFLICT (project, scope, key, worker)
DO UPDATE SET rate = EXCLUDED.rate, tokens = NULL, refill_time = now(), update_time = now()
