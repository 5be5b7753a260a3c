-- A new dashboard session for a key, valid for `ttl` seconds.
INSERT INTO dashboard_sessions (id, key_id, secret_hash, expire_time)
VALUES (%(id)s, %(key_id)s, %(secret_hash)s, now() + make_interval(secs => %(ttl)s))
