SELECT * FROM schedules WHERE project = %(project)s AND id = %(id)s
