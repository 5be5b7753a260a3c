-- A slice of the chain in sequence order, for VerifyAuditLog (keyset by sequence).
SELECT c.*
FROM commands c
WHERE c.project = %(project)s AND c.sequence > %(after)s
ORDER BY c.sequence
LIMIT %(limit)s
