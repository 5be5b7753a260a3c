UPDATE schedule_runs SET task_id = %(task_id)s, note = %(note)s
WHERE project = %(project)s AND schedule_id = %(schedule_id)s AND occurrence = %(occurrence)s
