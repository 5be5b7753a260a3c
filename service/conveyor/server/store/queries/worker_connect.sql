-- Records a worker as connected: a Connect stream's Hello (`session` set: a new session,
-- so connect_time restarts) or a LeaseTasks call (`session` NULL: keeps the stream's).
-- Appends worker.connected when it was not connected before.
WITH before AS (
    SELECT connected FROM workers WHERE project = %(project)s AND id = %(id)s
),
upserted AS (
    INSERT INTO workers AS w (
        project, id, queues, capacity, labels, sdk_version,
        connected, connect_time, last_seen_time, session
    )
    VALUES (
        %(project)s, %(id)s, %(queues)s::text[], %(capacity)s::integer, %(labels)s::jsonb,
        %(sdk_version)s, true, now(), now(), %(session)s::uuid
    )
    ON CONFLICT (project, id) DO UPDATE
    SET queues = excluded.queues,
        capacity = CASE WHEN excluded.session IS NULL THEN w.capacity ELSE excluded.capacity END,
        labels = CASE WHEN excluded.session IS NULL THEN w.labels ELSE excluded.labels END,
        sdk_version = CASE
            WHEN excluded.session IS NULL AND excluded.sdk_version = '' THEN w.sdk_version
            ELSE excluded.sdk_version
        END,
        connected = true,
        connect_time = CASE
            WHEN excluded.session IS NOT NULL OR NOT w.connected THEN now()
            ELSE w.connect_time
        END,
        last_seen_time = now(),
        session = coalesce(excluded.session, w.session)
    RETURNING w.*
),
events_written AS (
    INSERT INTO events (project, type, subject, data)
    SELECT u.project, 'worker.connected', 'projects/' || u.project || '/workers/' || u.id,
           jsonb_build_object(
               'queues', to_jsonb(u.queues), 'capacity', u.capacity,
               'sdk_version', u.sdk_version)
    FROM upserted u
    WHERE NOT coalesce((SELECT connected FROM before), false)
)
SELECT * FROM upserted
