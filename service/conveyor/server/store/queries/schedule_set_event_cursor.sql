UPDATE schedules SET event_cursor = %(event_cursor)s
WHERE project = %(project)s AND id = %(id)s
