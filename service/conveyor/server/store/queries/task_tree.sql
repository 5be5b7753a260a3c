-- The tree of a task: its root and every descendant (all share the root's root_task),
-- parents before children. A child is created after its parent, so its UUIDv7 id is
-- larger: id order is parents-first. %(limit)s is one more than a page, to tell
-- truncation. No rows when the named task does not exist.
SELECT t.*
FROM tasks t
WHERE t.project = %(project)s
  AND t.root_task = (SELECT n.root_task FROM tasks n WHERE n.project = %(project)s AND n.id = %(id)s)
ORDER BY t.id
LIMIT %(limit)s
