-- A Connect stream ended: the worker is disconnected unless another session holds it
-- now. Its leased tasks stay leased (they expire, or are reported after a reconnect).
WITH gone AS (
    UPDATE workers
    SET connected = false, session = NULL, last_seen_time = now()
    WHERE project = %(project)s AND id = %(id)s AND session = %(session)s::uuid
    RETURNING project, id
)
INSERT INTO events (project, type, subject, data)
SELECT project, 'worker.disconnected', 'projects/' || project || '/workers/' || id,
       jsonb_build_object('reason', %(reason)s::text)
FROM gone
