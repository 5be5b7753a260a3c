-- Serialises bootstrap-key minting across replicas starting together.
SELECT pg_advisory_xact_lock(hashtext('conveyor.bootstrap_key'))
