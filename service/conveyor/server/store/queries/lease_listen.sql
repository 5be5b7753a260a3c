-- The wake-up channel of idle workers: payload '<project>/<queue>' when tasks became ready.
LISTEN conveyor_tasks
