-- One replica's heartbeat: records it live, prunes replicas that stopped beating (rows
-- another replica is pruning are skipped, never waited for), and counts the live ones.
-- The statement's own changes are invisible to its SELECT, so it counts the others
-- and adds itself.
WITH beat AS (
    INSERT INTO replicas (id) VALUES (%(id)s)
    ON CONFLICT (id) DO UPDATE SET heartbeat_time = now()
), gone AS (
    DELETE FROM replicas
    WHERE id IN (
        SELECT id FROM replicas
        WHERE heartbeat_time < now() - make_interval(secs => %(ttl)s) AND id <> %(id)s
        FOR UPDATE SKIP LOCKED
    )
)
SELECT count(*) + 1 AS live
FROM replicas
WHERE id <> %(id)s AND heartbeat_time >= now() - make_interval(secs => %(ttl)s)
