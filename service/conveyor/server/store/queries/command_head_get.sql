-- The last sequence appended to a project's chain (0 when none).
SELECT coalesce((SELECT sequence FROM audit_heads WHERE project = %(project)s), 0)
