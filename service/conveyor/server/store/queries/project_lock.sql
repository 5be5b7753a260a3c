-- A project's row, locked until the end of the transaction: updates of its rate_limits
-- and of its keys' merge onto the current value (read after this lock, by a new
-- statement) without losing a concurrent update of another class.
SELECT rate_limits
FROM projects
WHERE id = %(id)s
FOR UPDATE
