-- 0001: projects, API keys and server-wide secrets.
--
-- Migrations run inside one transaction that migrate.py opens (holding the migration
-- advisory lock), so they must not contain BEGIN/COMMIT or statements that refuse to run
-- in a transaction (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE before PG 12).
-- Keep schema.sql equal to the result; tests/test_migrations.py checks it.

CREATE TABLE projects (
    id text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    callback_url text NOT NULL DEFAULT '',
    webhook_secret text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_id_format CHECK (id ~ '^[a-z0-9-]{1,63}$')
);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    -- NULL only for system keys, which act across projects (the bootstrap admin).
    project text REFERENCES projects (id),
    role text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    secret_hash bytea NOT NULL,
    system boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    last_used_time timestamptz,
    CONSTRAINT api_keys_role_valid CHECK (role IN ('viewer', 'worker', 'operator', 'admin')),
    CONSTRAINT api_keys_system_has_no_project CHECK (system = (project IS NULL))
);

CREATE INDEX api_keys_project_idx ON api_keys (project);

-- Secrets every replica must share (e.g. the key that signs page tokens), created once
-- by whichever replica gets there first.
CREATE TABLE server_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);

-- Every installation starts with a `default` project so the quickstart needs no setup.
-- Its webhook secret must be unguessable. gen_random_uuid() is built in (no pgcrypto,
-- which the embedded PostgreSQL does not ship) and draws from the server's strong random
-- source; two v4 UUIDs without dashes give 64 hex characters, 244 random bits.
-- random() is not used: it is a seeded PRNG whose output can be predicted.
INSERT INTO projects (id, display_name, webhook_secret)
VALUES (
    'default',
    'Default project',
    replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '')
);
