-- Serialises migrators on one database until their transaction ends. Taken before
-- anything else, including creating schema_migrations, which would otherwise race.
SELECT pg_advisory_xact_lock(%(key)s)
