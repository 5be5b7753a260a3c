-- A replica stopping: the others count it out at their next beat.
DELETE FROM replicas WHERE id = %(id)s
