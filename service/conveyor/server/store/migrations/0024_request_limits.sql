-- 0024: request limits per API key (RateLimits; domain/request_limits.py).
-- A key's own limits by method class, and its project's default for the classes a key
-- leaves unset: the JSON form of conveyor.v1.RateLimits, e.g.
-- {"read": {"requests_per_second": 50, "burst": 100}}. '{}' sets none (unlimited).
ALTER TABLE api_keys ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}';

-- The live server processes (replicas), so each enforces its share of a deployment-wide
-- budget. Each beats every few seconds (loops/replicas.py) and deletes its row when it
-- stops; a row that stopped beating (a crashed replica) is pruned by the others.
-- UNLOGGED: liveness, rebuilt within one beat after a crash.
CREATE UNLOGGED TABLE replicas (
    id text PRIMARY KEY,
    start_time timestamptz NOT NULL DEFAULT now(),
    heartbeat_time timestamptz NOT NULL DEFAULT now()
);
