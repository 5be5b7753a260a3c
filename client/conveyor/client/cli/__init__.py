"""The `conveyor` command: run the server, run workers, and steer every service.

    conveyor serve | migrate | admin-key reset | health | version
    conveyor worker --import tasks [--queues default,emails] [--concurrency 4]
    conveyor tasks create|get|list|cancel|approve|reject|tree|export|delete|retry|watch
    conveyor queues list|get|update|pause|resume|purge
    conveyor workers list|get|restart|resize|consume|stop-consuming|rate-limit
    conveyor schedules create|list|get|update|pause|resume|snooze|run|cancel|preview|delete
    conveyor events watch|list|publish
    conveyor audit list|get|verify
    conveyor projects list|get|create|update
    conveyor keys create|list|delete
    conveyor webhooks secret|rotate|deliveries

Output is a table on a terminal and JSON otherwise; `-o json|yaml|wide|table` anywhere.
Built on click and rich; see _main for the exit codes.
"""

from conveyor.client.cli._main import main

__all__ = ["main"]
