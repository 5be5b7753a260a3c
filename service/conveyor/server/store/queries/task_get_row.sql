-- One task row, without its attempts.
SELECT * FROM tasks WHERE project = %(project)s AND id = %(id)s
