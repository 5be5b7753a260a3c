DELETE FROM api_keys
WHERE project = %(project)s AND id = %(id)s AND (NOT system OR %(allow_system)s)
RETURNING id
