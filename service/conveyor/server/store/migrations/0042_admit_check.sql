-- 0042: a lease where no limit can apply runs without the admission block.
--
-- The lease statement (lease_report.sql) started its admission block at every lease,
-- even when the unlimited part filled the take or nothing limited waited: conveyor_admit,
-- the probe, the bucket writes and ~20 plan nodes, ~80 us of database CPU per lease
-- (load 5). store/leases.py now composes the lease without it (admit_check) unless it
-- saw limits on those queues lately; this function, called once by that statement,
-- raises conveyor_admit_needed (SQLSTATE CV001) when the full statement would have
-- called conveyor_admit: the unlimited part left room and a queue has limits or the
-- probe finds a limited candidate. The statement is then rolled back whole (nothing
-- it did, no NOTIFY, survives) and the full statement runs, so what is leased never
-- depends on what the server guessed. plpgsql, so the probe runs only when there is room.
CREATE FUNCTION conveyor_admit_check(p text, w text, qs text[], want integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF want > 0 THEN
        IF qs && conveyor_limited_queues(p) OR EXISTS (
            SELECT FROM conveyor_lease_candidates(p, qs, 1, NULL, conveyor_rate_kinds(p, w))
        ) THEN
            RAISE EXCEPTION 'conveyor_admit_needed' USING ERRCODE = 'CV001';
        END IF;
    END IF;
    RETURN true;
END;
$$;
